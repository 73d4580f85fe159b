import { createHash, randomUUID } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, stat } from "node:fs/promises";
import { join } from "node:path";
import { Readable } from "node:stream";
import { pipeline } from "node:stream/promises";
import type { ReadableStream as WebReadableStream } from "node:stream/web";
import type { Logger } from "../common/logger.js";
import { defaultModelName, readCatalog, verifyFile, type HubRef, type ModelManifest, type ResolvedModel } from "./model-manifest.js";

/** Where a file can come from besides the hub (the S3 mirror, when configured). */
export interface ModelMirror {
  /** Copies the object to `path`; false when the mirror does not have it. */
  get(key: string, path: string, signal: AbortSignal): Promise<boolean>;
  put(key: string, path: string, signal: AbortSignal): Promise<void>;
}

export interface FetchOptions {
  readonly cacheDir: string;
  readonly hubEndpoint: string;
  readonly hubToken?: string | undefined;
  readonly logger: Logger;
  readonly name?: string;
  readonly mirror?: ModelMirror | undefined;
  readonly signal?: AbortSignal;
  /** Per-attempt timeout of one download. */
  readonly timeoutMs?: number;
}

/**
 * Resolves a catalog model to verified local files. Order: the local cache,
 * then the S3 mirror, then the hub. Every file is verified against the
 * manifest's sha256 and written atomically (temp file, then rename); files
 * fetched from the hub are copied to the mirror so other nodes and restarts
 * never need the hub.
 */
export async function fetchCatalogModel(options: FetchOptions): Promise<ResolvedModel> {
  const name = options.name ?? defaultModelName;
  const manifest = (await readCatalog()).find((m) => m.name === name);
  if (manifest === undefined) throw new Error(`model '${name}' is not in the model catalog`);
  const dir = join(options.cacheDir, manifest.name, manifest.version);
  await mkdir(dir, { recursive: true });
  const files = [
    { file: manifest.file, sha256: manifest.sha256, hub: manifest.source.hub, what: "model" },
    { file: manifest.labels.file, sha256: manifest.labels.sha256, hub: manifest.labels.source.hub, what: "labels" },
  ];
  const origins = new Set<string>();
  for (const f of files) {
    origins.add(await ensureFile(options, manifest, dir, f));
  }
  const origin = origins.has("hub") ? "hub" : origins.has("s3") ? "s3" : "cache";
  return { manifest, modelPath: join(dir, manifest.file), labelsPath: join(dir, manifest.labels.file), origin };
}

/** The mirror key of a model file: content-addressed, so versions never collide. */
export function mirrorKey(manifest: ModelManifest, file: string, sha256: string): string {
  return `models/${manifest.name}/${sha256}/${file}`;
}

async function ensureFile(
  options: FetchOptions,
  manifest: ModelManifest,
  dir: string,
  f: { file: string; sha256: string; hub: HubRef | undefined; what: string },
): Promise<"cache" | "s3" | "hub"> {
  const target = join(dir, f.file);
  const signal = options.signal ?? new AbortController().signal;
  if (await exists(target)) {
    try {
      await verifyFile(target, f.sha256, f.what);
      return "cache";
    } catch (err) {
      options.logger.warn({ err, file: target }, "cached model file is corrupt; fetching again");
      await rm(target, { force: true });
    }
  }
  const key = mirrorKey(manifest, f.file, f.sha256);
  if (options.mirror !== undefined) {
    const tmp = `${target}.${randomUUID()}.part`;
    try {
      if (await options.mirror.get(key, tmp, signal)) {
        await verifyFile(tmp, f.sha256, f.what);
        await rename(tmp, target);
        options.logger.info({ key }, "model file fetched from the S3 mirror");
        return "s3";
      }
    } catch (err) {
      options.logger.warn({ err, key }, "model mirror unusable; trying the hub");
    } finally {
      await rm(tmp, { force: true });
    }
  }
  if (f.hub === undefined) throw new Error(`${f.what} file ${f.file} is not cached and the manifest names no hub source`);
  await downloadFromHub(options, f.hub, target, f.sha256, f.what, signal);
  if (options.mirror !== undefined) {
    await options.mirror.put(key, target, signal).catch((err: unknown) => options.logger.warn({ err, key }, "could not mirror the model file to S3"));
  }
  return "hub";
}

/** GET {endpoint}/{repo}/resolve/{revision}/{file}, following redirects, hashed while streamed to a temp file. */
async function downloadFromHub(options: FetchOptions, hub: HubRef, target: string, sha256: string, what: string, signal: AbortSignal): Promise<void> {
  const url = `${options.hubEndpoint.replace(/\/$/, "")}/${hub.repo}/resolve/${encodeURIComponent(hub.revision)}/${hub.file}`;
  const tmp = `${target}.${randomUUID()}.part`;
  const hint = "set CATEGORIZE_MODEL to a local model manifest or .onnx file (for example ../shared/models/mobilenetv2-12-int8.onnx), or HF_ENDPOINT to a reachable hub mirror";
  try {
    let res: Response;
    try {
      res = await fetch(url, {
        redirect: "follow",
        headers: options.hubToken === undefined ? {} : { authorization: `Bearer ${options.hubToken}` },
        signal: AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs ?? 120_000)]),
      });
    } catch (err) {
      const cause = (err as { cause?: { code?: string; message?: string } }).cause;
      throw new Error(`cannot reach the model hub for ${what} ${hub.repo}/${hub.file} (${cause?.code ?? cause?.message ?? (err instanceof Error ? err.message : String(err))}); ${hint}`, { cause: err });
    }
    if (!res.ok || res.body === null) throw new Error(`model hub answered ${res.status} for ${what} ${hub.repo}@${hub.revision}/${hub.file}; ${hint}`);
    const hash = createHash("sha256");
    const body = Readable.fromWeb(res.body as WebReadableStream<Uint8Array>);
    body.on("data", (chunk: Buffer) => hash.update(chunk));
    await pipeline(body, createWriteStream(tmp, { flags: "wx" }), { signal });
    const actual = hash.digest("hex");
    if (actual !== sha256) throw new Error(`${what} downloaded from ${hub.repo}@${hub.revision} has sha256 ${actual}, expected ${sha256}; refusing it`);
    await rename(tmp, target);
    options.logger.info({ repo: hub.repo, revision: hub.revision, file: hub.file }, "model file fetched from the hub");
  } finally {
    await rm(tmp, { force: true });
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch {
    return false;
  }
}
