import type { ClassifyResponse } from "../gen/categorize/v1/categorize_pb.js";
import { topCategory } from "./top-category.js";

/** The ways `classify` prints its answers on stdout. */
export const formats = ["table", "json", "csv"] as const;
export type Format = (typeof formats)[number];

/** Turns answers into stdout lines of one format. */
export interface Formatter {
  /** Printed once before the first answer (none for json). */
  readonly header: string | undefined;
  row(path: string, res: ClassifyResponse): string;
}

/** A formatter; `paths` are all files of the run, so the table's path column fits the longest up front. */
export function createFormatter(format: Format, paths: readonly string[]): Formatter {
  switch (format) {
    case "json":
      return {
        header: undefined,
        row: (path, res) =>
          JSON.stringify({
            path,
            sha256: res.sha256,
            top1_index: res.labels[0]?.index ?? null,
            label: res.labels[0]?.name ?? null,
            score: res.labels[0]?.score ?? null,
            cached: res.cached,
            model: res.model === undefined ? null : { name: res.model.name, version: res.model.version },
            labels: res.labels.map((l) => ({ index: l.index, name: l.name, score: l.score })),
            category: topCategory(res.categories),
            categories: res.categories.map((c) => ({ path: c.path, score: c.score })),
          }),
      };
    case "csv":
      return {
        // The category column is last, so readers of the earlier columns by position are unaffected.
        header: "path,sha256,top1_index,label,score,cached,category",
        row: (path, res) => {
          const top = res.labels[0];
          return [path, res.sha256, top?.index ?? "", top?.name ?? "", top === undefined ? "" : top.score.toFixed(6), res.cached, topCategory(res.categories)].map(csvField).join(",");
        },
      };
    case "table": {
      // Streamed rows cannot be re-aligned later; a very long path just pushes its own row out.
      const width = Math.min(60, Math.max(4, ...paths.map((p) => p.length)));
      return {
        header: `${"path".padEnd(width)}  ${"top1".padStart(4)}  ${"label".padEnd(24)}  ${"score".padStart(7)}  cached`,
        row: (path, res) => {
          const top = res.labels[0];
          const score = top === undefined ? "-" : `${(top.score * 100).toFixed(1)} %`;
          return `${path.padEnd(width)}  ${String(top?.index ?? "-").padStart(4)}  ${(top?.name ?? "-").padEnd(24)}  ${score.padStart(7)}  ${res.cached ? "yes" : "no"}`;
        },
      };
    }
  }
}

/** RFC 4180 quoting: only fields that need it (labels like "crane, bird" or paths with commas). */
function csvField(value: string | number | boolean): string {
  const s = String(value);
  return /[",\r\n]/.test(s) ? `"${s.replaceAll('"', '""')}"` : s;
}
