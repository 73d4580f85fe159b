import { parseArgs } from "node:util";
import { positiveInt, usageError as bad } from "./arguments.js";
import { classifyFiles, edgeClient, maxConcurrency } from "./classify-stream.js";
import { collectImageFiles } from "./image-files.js";
import { createFormatter, formats, type Format } from "./output-format.js";
import { createProgress } from "./progress.js";

/** `categorize classify PATH...`: exit 0 when every file was classified, 1 when any failed, 2 on bad usage. */
export async function classify(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: {
      edge: { type: "string", default: "http://127.0.0.1:8080" },
      format: { type: "string", default: "table" },
      json: { type: "boolean", default: false },
      "top-k": { type: "string", default: "5" },
      concurrency: { type: "string", default: "8" },
    },
  });
  const format = values.json ? "json" : values.format;
  if (!(formats as readonly string[]).includes(format)) return bad(`unknown format '${format}' (${formats.join(", ")})`);
  const topK = positiveInt(values["top-k"], 1000);
  if (topK === undefined) return bad(`--top-k needs a whole number from 1 to 1000, not '${values["top-k"]}'`);
  const concurrency = positiveInt(values.concurrency, maxConcurrency);
  if (concurrency === undefined) return bad(`--concurrency needs a whole number from 1 to ${maxConcurrency}, not '${values.concurrency}'`);
  if (positionals.length === 0) return bad("classify needs at least one file or folder");

  const { files, missing } = await collectImageFiles(positionals);
  for (const m of missing) process.stderr.write(`${m.path}: ${m.message}\n`);
  if (files.length === 0) {
    process.stderr.write(`no image files in ${positionals.join(" ")}\n`);
    return 1;
  }

  const formatter = createFormatter(format as Format, files);
  const progress = createProgress("classify", files.length);
  if (formatter.header !== undefined) progress.line("stdout", formatter.header);
  const counts = { ok: 0, failed: missing.length, cached: 0 };
  const started = performance.now();
  const { streamError, unsent } = await classifyFiles({
    client: edgeClient(values.edge),
    files,
    topK,
    concurrency,
    onOutcome: (o) => {
      progress.tick(!o.ok);
      if (o.ok) {
        counts.ok++;
        if (o.result.cached) counts.cached++;
        progress.line("stdout", formatter.row(o.path, o.result));
      } else {
        counts.failed++;
        progress.line("stderr", `${o.path}: ${o.message}`);
      }
    },
  });
  progress.finish();
  if (streamError !== undefined) process.stderr.write(`stream failed: ${streamError}${unsent.length > 0 ? ` (${unsent.length} files not sent)` : ""}\n`);
  counts.failed += unsent.length;
  const seconds = (performance.now() - started) / 1000;
  process.stderr.write(`ok ${counts.ok}, failed ${counts.failed}, cached ${counts.cached} (${files.length} ${files.length === 1 ? "file" : "files"} in ${seconds.toFixed(1)} s)\n`);
  return counts.failed === 0 ? 0 : 1;
}
