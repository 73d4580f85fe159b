import { readFileSync, readdirSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The read-only shared folder beside the checkout (models and photos); never copied into the repo. */
export const sharedDir = resolve(process.env.CATEGORIZE_SHARED_DIR ?? join(dirname(fileURLToPath(import.meta.url)), "..", "..", "..", "shared"));
export const modelPath = join(sharedDir, "models", "mobilenetv2-12-int8.onnx");
export const imagesDir = join(sharedDir, "images");

/** One row of images/expected.tsv. */
export interface Expectation {
  readonly file: string;
  readonly acceptTop1: readonly number[] | undefined;
  readonly acceptInTop5: readonly number[] | undefined;
  readonly minTop1Prob: number | undefined;
}

export function readExpectations(): Expectation[] {
  const lines = readFileSync(join(imagesDir, "expected.tsv"), "utf8").trim().split("\n").slice(1);
  const list = (v: string | undefined) => (v === undefined || v === "-" ? undefined : v.split("|").map(Number));
  return lines.map((line) => {
    const [file, , , top1, top5, minProb] = line.split("\t");
    return { file: file!, acceptTop1: list(top1), acceptInTop5: list(top5), minTop1Prob: minProb === undefined || minProb === "-" ? undefined : Number(minProb) };
  });
}

export function readImage(name: string): Buffer {
  return readFileSync(join(imagesDir, name));
}

export function imageNames(): string[] {
  return readdirSync(imagesDir).filter((n) => /\.(png|jpe?g)$/i.test(n)).sort();
}
