import { createReadStream } from "node:fs";
import { mkdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import { dirname, join, resolve, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import { createWriteStream } from "node:fs";
import * as Minio from "minio";
import { invalidArgument, unavailable } from "./errors.js";
import type { Metrics } from "./metrics.js";

/** The object storage port (originals and the model mirror). Keys are validated, never client-chosen paths. */
export interface ObjectStore {
  readonly kind: "s3" | "filesystem";
  /** Creates the bucket when missing. */
  ensureReady(signal?: AbortSignal): Promise<void>;
  put(key: string, body: Uint8Array, contentType: string): Promise<void>;
  /** Uploads a local file (multipart above the threshold). */
  putFile(key: string, path: string, contentType: string): Promise<void>;
  exists(key: string): Promise<boolean>;
  get(key: string): Promise<Uint8Array | undefined>;
  /** Copies an object to a local file; false when it does not exist. */
  getFile(key: string, path: string): Promise<boolean>;
  /** Idempotent: removing a missing object succeeds. */
  remove(key: string): Promise<void>;
  /** Lists keys under a prefix (tests and orphan checks). */
  list(prefix: string): Promise<string[]>;
  /** A cheap round trip for readiness. */
  ping(signal?: AbortSignal): Promise<void>;
}

const KEY = /^[a-z0-9][a-z0-9/_.-]{0,500}$/;

/** Refuses keys that could escape their prefix (traversal, absolute paths, odd characters). */
export function assertSafeKey(key: string): void {
  if (!KEY.test(key) || key.includes("..") || key.includes("//")) throw invalidArgument(`invalid object key '${key.slice(0, 80)}'`);
}

/** Content-addressed key of an original: fanned out by hash prefix, extension from the sniffed type. */
export function originalKey(sha256: string, mime: string): string {
  if (!/^[0-9a-f]{64}$/.test(sha256)) throw invalidArgument("sha256 must be 64 lower-case hex digits");
  const ext = ({ "image/jpeg": "jpg", "image/png": "png", "image/webp": "webp", "image/gif": "gif", "image/avif": "avif", "image/tiff": "tiff" } as Record<string, string>)[mime] ?? "bin";
  return `originals/${sha256.slice(0, 2)}/${sha256.slice(2, 4)}/${sha256}.${ext}`;
}

type Op = "put" | "exists" | "get" | "remove" | "list" | "ping" | "bucket";

function observe<T>(metrics: Metrics | undefined, op: Op, fn: () => Promise<T>): Promise<T> {
  const started = performance.now();
  return fn().then(
    (v) => {
      metrics?.s3Duration.observe({ op }, (performance.now() - started) / 1000);
      return v;
    },
    (err: unknown) => {
      metrics?.s3Errors.inc({ op });
      metrics?.s3Duration.observe({ op }, (performance.now() - started) / 1000);
      throw err;
    },
  );
}

const notFound = (err: unknown) => {
  const code = (err as { code?: string }).code;
  return code === "NoSuchKey" || code === "NotFound" || code === "NoSuchObject";
};

/** Any S3 through the minio client. Connection failures surface as UNAVAILABLE. */
export function createS3ObjectStore(options: {
  endpoint: string;
  accessKey: string;
  secretKey: string;
  region: string;
  bucket: string;
  multipartThresholdBytes: number;
  metrics?: Metrics;
}): ObjectStore {
  const url = new URL(options.endpoint);
  const client = new Minio.Client({
    endPoint: url.hostname,
    port: Number(url.port || (url.protocol === "https:" ? 443 : 80)),
    useSSL: url.protocol === "https:",
    accessKey: options.accessKey,
    secretKey: options.secretKey,
    region: options.region,
    partSize: options.multipartThresholdBytes,
  });
  const bucket = options.bucket;
  const wrap = <T>(op: Op, fn: () => Promise<T>): Promise<T> =>
    observe(options.metrics, op, fn).catch((err: unknown) => {
      if (err instanceof Error && err.name === "CategorizeError") throw err;
      const code = (err as { code?: string }).code ?? "";
      if (["ECONNREFUSED", "ECONNRESET", "ETIMEDOUT", "EPIPE", "ENOTFOUND", "EAI_AGAIN", "SlowDown", "ServiceUnavailable", "XMinioServerNotInitialized"].includes(code) || (err instanceof Error && /socket hang up|connect/i.test(err.message))) {
        throw unavailable(`object storage unavailable: ${code || (err instanceof Error ? err.message : String(err))}`, err);
      }
      throw err;
    });
  return {
    kind: "s3",
    ensureReady: () =>
      wrap("bucket", async () => {
        if (!(await client.bucketExists(bucket))) {
          await client.makeBucket(bucket, options.region).catch((err: unknown) => {
            // Another node created it first.
            if ((err as { code?: string }).code !== "BucketAlreadyOwnedByYou") throw err;
          });
        }
      }),
    put: (key, body, contentType) =>
      wrap("put", async () => {
        assertSafeKey(key);
        await client.putObject(bucket, key, Buffer.from(body.buffer, body.byteOffset, body.byteLength), body.byteLength, { "Content-Type": contentType });
      }),
    putFile: (key, path, contentType) =>
      wrap("put", async () => {
        assertSafeKey(key);
        await client.fPutObject(bucket, key, path, { "Content-Type": contentType });
      }),
    exists: (key) =>
      wrap("exists", async () => {
        assertSafeKey(key);
        try {
          await client.statObject(bucket, key);
          return true;
        } catch (err) {
          if (notFound(err)) return false;
          throw err;
        }
      }),
    get: (key) =>
      wrap("get", async () => {
        assertSafeKey(key);
        try {
          const stream = await client.getObject(bucket, key);
          const chunks: Buffer[] = [];
          for await (const c of stream) chunks.push(c as Buffer);
          return Buffer.concat(chunks);
        } catch (err) {
          if (notFound(err)) return undefined;
          throw err;
        }
      }),
    getFile: (key, path) =>
      wrap("get", async () => {
        assertSafeKey(key);
        try {
          await client.fGetObject(bucket, key, path);
          return true;
        } catch (err) {
          if (notFound(err)) return false;
          throw err;
        }
      }),
    remove: (key) =>
      wrap("remove", async () => {
        assertSafeKey(key);
        await client.removeObject(bucket, key);
      }),
    list: (prefix) =>
      wrap("list", async () => {
        const keys: string[] = [];
        for await (const item of client.listObjectsV2(bucket, prefix, true)) {
          const name = (item as { name?: string }).name;
          if (name !== undefined) keys.push(name);
        }
        return keys;
      }),
    ping: () =>
      wrap("ping", async () => {
        await client.bucketExists(bucket);
      }),
  };
}

/** Objects as files under a root folder: the embedded node's store, same port as S3. */
export function createFilesystemObjectStore(root: string): ObjectStore {
  const base = resolve(root);
  const pathOf = (key: string) => {
    assertSafeKey(key);
    const p = resolve(base, key);
    if (!p.startsWith(base + sep)) throw invalidArgument("object key escapes the store");
    return p;
  };
  const atomicWrite = async (target: string, write: (tmp: string) => Promise<void>) => {
    await mkdir(dirname(target), { recursive: true });
    const tmp = `${target}.${randomUUID()}.part`;
    try {
      await write(tmp);
      await rename(tmp, target);
    } finally {
      await rm(tmp, { force: true });
    }
  };
  return {
    kind: "filesystem",
    ensureReady: async () => {
      await mkdir(base, { recursive: true });
    },
    put: (key, body) => atomicWrite(pathOf(key), (tmp) => writeFile(tmp, body)),
    putFile: (key, path) => atomicWrite(pathOf(key), (tmp) => pipeline(createReadStream(path), createWriteStream(tmp))),
    exists: async (key) => {
      try {
        await stat(pathOf(key));
        return true;
      } catch {
        return false;
      }
    },
    get: async (key) => {
      try {
        return await readFile(pathOf(key));
      } catch {
        return undefined;
      }
    },
    getFile: async (key, path) => {
      try {
        await pipeline(createReadStream(pathOf(key)), createWriteStream(path));
        return true;
      } catch {
        return false;
      }
    },
    remove: async (key) => {
      await rm(pathOf(key), { force: true });
    },
    list: async (prefix) => {
      const { readdir } = await import("node:fs/promises");
      const out: string[] = [];
      const walk = async (dir: string): Promise<void> => {
        let entries;
        try {
          entries = await readdir(dir, { withFileTypes: true });
        } catch {
          return;
        }
        for (const e of entries) {
          const p = join(dir, e.name);
          if (e.isDirectory()) await walk(p);
          else if (!e.name.endsWith(".part")) out.push(p.slice(base.length + 1).split(sep).join("/"));
        }
      };
      await walk(base);
      return out.filter((k) => k.startsWith(prefix)).sort();
    },
    ping: async () => {
      await mkdir(base, { recursive: true });
    },
  };
}
