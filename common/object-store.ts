import { createReadStream } from "node:fs";
import { mkdir, readdir, readFile, rename, rm, stat, writeFile } from "node:fs/promises";
import { randomUUID } from "node:crypto";
import { dirname, join, resolve, sep } from "node:path";
import { pipeline } from "node:stream/promises";
import { createWriteStream } from "node:fs";
import * as Minio from "minio";
import { invalidArgument, unavailable } from "./errors.js";
import type { Metrics } from "./metrics.js";

/** One object of a listing. */
export interface ObjectEntry {
  readonly key: string;
  /** When the object was last written, by the store's clock. */
  readonly lastModified: Date;
  readonly size: number;
}

/** A bounded slice of a listing. */
export interface ListPageOptions {
  /** Only keys after this one (exclusive); the last key of the previous page continues a listing. */
  readonly startAfter?: string | undefined;
  /** At most this many objects (at least 1). */
  readonly limit: number;
  readonly signal?: AbortSignal | undefined;
}

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
  /** Lists every key under a prefix, ascending (tests; unbounded, use listPage for large prefixes). */
  list(prefix: string): Promise<string[]>;
  /** Up to `limit` objects under a prefix, keys ascending in byte order (as S3 lists them), after `startAfter` when given. */
  listPage(prefix: string, options: ListPageOptions): Promise<ObjectEntry[]>;
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

/** The sha256 an originals key names (the inverse of originalKey); undefined for any other key. */
export function originalSha256(key: string): string | undefined {
  const m = /^originals\/([0-9a-f]{2})\/([0-9a-f]{2})\/([0-9a-f]{64})\.[a-z0-9]+$/.exec(key);
  if (m === null || !m[3]!.startsWith(m[1]! + m[2]!)) return undefined;
  return m[3];
}

const LIST_ALL_PAGE = 1000;

/** Every key under a prefix, one page at a time. */
async function listAll(listPage: ObjectStore["listPage"], prefix: string): Promise<string[]> {
  const keys: string[] = [];
  for (;;) {
    const page = await listPage(prefix, { startAfter: keys.at(-1), limit: LIST_ALL_PAGE });
    for (const e of page) keys.push(e.key);
    if (page.length < LIST_ALL_PAGE) return keys;
  }
}

function checkLimit(limit: number): void {
  if (!Number.isInteger(limit) || limit < 1) throw invalidArgument(`list limit must be a positive integer, not ${limit}`);
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
  /**
   * ListObjectsV2 requests asking for no more than is still wanted (max-keys;
   * S3 caps a response at 1000), so a page never reads past its limit.
   */
  const listPage: ObjectStore["listPage"] = (prefix, { startAfter, limit, signal }) =>
    wrap("list", async () => {
      checkLimit(limit);
      const out: ObjectEntry[] = [];
      let token = "";
      for (;;) {
        signal?.throwIfAborted();
        const res = await client.listObjectsV2Query(bucket, prefix, token, "", Math.min(limit - out.length, 1000), token === "" ? (startAfter ?? "") : "");
        for (const item of res.objects) {
          if (item.name !== undefined && out.length < limit) out.push({ key: item.name, lastModified: item.lastModified, size: item.size });
        }
        if (out.length >= limit || !res.isTruncated || res.nextContinuationToken === "") return out;
        token = res.nextContinuationToken;
      }
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
    list: (prefix) => listAll(listPage, prefix),
    listPage,
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
  // Folders this process made: a put into one skips the mkdir (two fan-out levels hold at most 65,536).
  const made = new Set<string>();
  const atomicWrite = async (target: string, write: (tmp: string) => Promise<void>) => {
    const dir = dirname(target);
    if (!made.has(dir)) {
      await mkdir(dir, { recursive: true });
      made.add(dir);
    }
    const tmp = `${target}.${randomUUID()}.part`;
    try {
      try {
        await write(tmp);
      } catch (err) {
        // The folder went away since (removed by hand): make it again once.
        if ((err as { code?: string }).code !== "ENOENT") throw err;
        await mkdir(dir, { recursive: true });
        await write(tmp);
      }
      await rename(tmp, target);
    } finally {
      // Only a failed write or rename leaves the part file; a successful rename took it.
      await rm(tmp, { force: true });
    }
  };
  /**
   * Walks the folders in key order, skipping those wholly before startAfter or
   * outside the prefix, and stops at the limit. Entries sort by name plus "/"
   * for folders, which is exactly the byte order of the keys they hold.
   */
  const listPage: ObjectStore["listPage"] = async (prefix, { startAfter, limit, signal }) => {
    checkLimit(limit);
    const after = startAfter ?? "";
    const out: ObjectEntry[] = [];
    const byKey = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);
    const walk = async (dir: string, dirKey: string): Promise<void> => {
      let entries;
      try {
        entries = await readdir(dir, { withFileTypes: true });
      } catch {
        return;
      }
      const sorted = entries.map((e) => ({ e, key: dirKey + e.name + (e.isDirectory() ? "/" : "") })).sort((a, b) => byKey(a.key, b.key));
      for (const { e, key } of sorted) {
        if (out.length >= limit) return;
        signal?.throwIfAborted();
        if (e.isDirectory()) {
          // Every key inside starts with `key`: skip the folder when all of them sort at or before startAfter, or none can match the prefix.
          if (key < after && !after.startsWith(key)) continue;
          if (!key.startsWith(prefix) && !prefix.startsWith(key)) continue;
          await walk(join(dir, e.name), key);
        } else if (e.isFile() && !e.name.endsWith(".part") && key.startsWith(prefix) && key > after) {
          try {
            const s = await stat(join(dir, e.name));
            out.push({ key, lastModified: s.mtime, size: s.size });
          } catch {
            // Removed while listing.
          }
        }
      }
    };
    await walk(base, "");
    return out;
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
    list: (prefix) => listAll(listPage, prefix),
    listPage,
    ping: async () => {
      await mkdir(base, { recursive: true });
    },
  };
}
