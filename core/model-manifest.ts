import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { readdir, readFile } from "node:fs/promises";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { z } from "zod";

const hubRef = z.object({ repo: z.string().min(1), revision: z.string().min(1), file: z.string().min(1) });
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, "sha256 must be 64 lower-case hex digits");

const manifestSchema = z.object({
  name: z.string().regex(/^[a-z0-9][a-z0-9._-]*$/),
  version: z.string().min(1),
  description: z.string().optional(),
  file: z.string().min(1),
  sha256,
  sizeBytes: z.number().int().positive().optional(),
  license: z.string().optional(),
  source: z.object({ hub: hubRef.optional(), s3Key: z.string().optional() }).default({}),
  input: z.object({
    name: z.string(),
    dtype: z.literal("float32"),
    layout: z.literal("NCHW"),
    shape: z.tuple([z.number().int(), z.literal(3), z.number().int().positive(), z.number().int().positive()]),
  }),
  output: z.object({ name: z.string(), kind: z.enum(["logits", "probabilities"]), numClasses: z.number().int().positive() }),
  preprocessing: z.object({
    resizeShorter: z.number().int().positive(),
    cropHeight: z.number().int().positive(),
    cropWidth: z.number().int().positive(),
    channelOrder: z.enum(["RGB", "BGR"]),
    /** Pixel values are divided by this before mean/std (255 maps uint8 to [0, 1]). */
    scale: z.number().positive(),
    mean: z.tuple([z.number(), z.number(), z.number()]),
    std: z.tuple([z.number().positive(), z.number().positive(), z.number().positive()]),
  }),
  labels: z.object({ file: z.string().min(1), sha256, source: z.object({ hub: hubRef.optional() }).default({}) }),
});

/** A model manifest: everything needed to fetch, verify, feed and read one model. */
export type ModelManifest = z.infer<typeof manifestSchema>;
export type HubRef = z.infer<typeof hubRef>;

/** The folder of manifests shipped with the code: the model catalog. */
export const catalogDir = join(dirname(fileURLToPath(import.meta.url)), "models");

/** The catalog's default model. */
export const defaultModelName = "mobilenetv2-12-int8";

/** Parses and validates a manifest object; the error names every bad field. */
export function parseManifest(value: unknown, origin: string): ModelManifest {
  const parsed = manifestSchema.safeParse(value);
  if (!parsed.success) {
    throw new Error(`invalid model manifest ${origin}: ${parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  if (parsed.data.input.shape[2] !== parsed.data.preprocessing.cropHeight || parsed.data.input.shape[3] !== parsed.data.preprocessing.cropWidth) {
    throw new Error(`invalid model manifest ${origin}: preprocessing crop does not match the input shape`);
  }
  return parsed.data;
}

export async function readManifest(path: string): Promise<ModelManifest> {
  return parseManifest(JSON.parse(await readFile(path, "utf8")) as unknown, path);
}

/** Every manifest in the catalog. */
export async function readCatalog(dir = catalogDir): Promise<ModelManifest[]> {
  const names = (await readdir(dir)).filter((n) => n.endsWith(".json")).sort();
  return Promise.all(names.map((n) => readManifest(join(dir, n))));
}

/** sha256 (hex) of a file, streamed. */
export async function sha256File(path: string): Promise<string> {
  const hash = createHash("sha256");
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return hash.digest("hex");
}

/** A manifest resolved to files on disk whose hashes were verified. */
export interface ResolvedModel {
  readonly manifest: ModelManifest;
  readonly modelPath: string;
  readonly labelsPath: string;
  /** Where the model came from: "file", "cache", "s3" or "hub". */
  readonly origin: string;
}

/**
 * Resolves CATEGORIZE_MODEL given as a path: a manifest (.json, files beside
 * it), or an .onnx file the catalog knows by sha256 (labels beside it).
 * Both files are verified against the manifest's hashes.
 */
export async function resolveLocalModel(ref: string, dir = catalogDir): Promise<ResolvedModel> {
  const path = resolve(ref);
  let manifest: ModelManifest;
  let modelPath: string;
  if (path.endsWith(".json")) {
    manifest = await readManifest(path);
    modelPath = join(dirname(path), manifest.file);
  } else {
    const digest = await sha256File(path).catch((err: unknown) => {
      throw new Error(`cannot read model file ${ref}: ${err instanceof Error ? err.message : String(err)}`);
    });
    const match = (await readCatalog(dir)).find((m) => m.sha256 === digest);
    if (match === undefined) {
      throw new Error(`model file ${ref} (sha256 ${digest}) is not in the model catalog; pass a manifest (.json) that describes it instead`);
    }
    manifest = match;
    modelPath = path;
  }
  const labelsPath = join(dirname(modelPath), manifest.labels.file);
  await verifyFile(modelPath, manifest.sha256, "model");
  await verifyFile(labelsPath, manifest.labels.sha256, "labels");
  return { manifest, modelPath, labelsPath, origin: "file" };
}

/** Throws unless the file exists and has the expected sha256. */
export async function verifyFile(path: string, expected: string, what: string): Promise<void> {
  let actual: string;
  try {
    actual = await sha256File(path);
  } catch (err) {
    throw new Error(`${what} file ${path} cannot be read: ${err instanceof Error ? err.message : String(err)}`);
  }
  if (actual !== expected) throw new Error(`${what} file ${path} has sha256 ${actual}, expected ${expected}`);
}

/** Reads the label file: one class per line, display name before the first comma. */
export async function readLabels(path: string, expectedCount: number): Promise<string[]> {
  const lines = (await readFile(path, "utf8")).split("\n").filter((l, i, all) => l.length > 0 || i < all.length - 1);
  if (lines.length !== expectedCount) throw new Error(`labels file ${path} has ${lines.length} lines, the model has ${expectedCount} classes`);
  return lines.map((l) => (l.split(",")[0] ?? l).trim());
}
