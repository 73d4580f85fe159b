import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { computeQuality } from "../core/quality.js";
import { positiveInt, usageError } from "./arguments.js";
import { classifyFiles, edgeClient, maxConcurrency } from "./classify-stream.js";
import { createProgress } from "./progress.js";

/**
 * `categorize evaluate DIR`: classifies the labelled rows of DIR/expected.tsv
 * over one stream, submits each verdict as feedback and prints the quality it
 * submitted. Exit 1 when any image or feedback failed.
 */
export async function evaluate(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { edge: { type: "string", default: "http://127.0.0.1:8080" }, concurrency: { type: "string", default: "8" } },
  });
  const dir = positionals[0];
  if (dir === undefined) return usageError("evaluate needs a folder with expected.tsv");
  const concurrency = positiveInt(values.concurrency, maxConcurrency);
  if (concurrency === undefined) return usageError(`--concurrency needs a whole number from 1 to ${maxConcurrency}, not '${values.concurrency}'`);

  const accepted = new Map<string, number[]>();
  for (const line of (await readFile(join(dir, "expected.tsv"), "utf8")).trim().split("\n").slice(1)) {
    const [file, , , acceptTop1] = line.split("\t");
    // Photos of no class in the label set ("-") say nothing about accuracy.
    if (file === undefined || acceptTop1 === undefined || acceptTop1 === "-") continue;
    accepted.set(join(dir, file), acceptTop1.split("|").map(Number));
  }
  const files = [...accepted.keys()];
  const client = edgeClient(values.edge);
  const progress = createProgress("evaluate", files.length);
  const pairs: { truth: number; predicted: number }[] = [];
  const feedback: Promise<void>[] = [];
  let failed = 0;
  const source = `eval:${basename(dir)}`;
  const { streamError, unsent } = await classifyFiles({
    client,
    files,
    topK: 5,
    concurrency,
    onOutcome: (o) => {
      progress.tick(!o.ok);
      if (!o.ok) {
        failed++;
        progress.line("stderr", `${o.path}: ${o.message}`);
        return;
      }
      const top = o.result.labels[0];
      const predicted = top?.index ?? -1;
      const list = accepted.get(o.path)!;
      // Any acceptable class counts as the truth when the model chose it; otherwise the first listed.
      const truth = list.includes(predicted) ? predicted : list[0]!;
      feedback.push(
        client.submitFeedback({ sha256: o.result.sha256, trueClass: truth, source }, { timeoutMs: 30_000 }).then(
          () => {
            pairs.push({ truth, predicted });
            progress.line("stdout", `${truth === predicted ? "ok  " : "MISS"} ${basename(o.path)}: predicted ${predicted} ${top?.name ?? ""}, true ${truth}`);
          },
          (err: unknown) => {
            failed++;
            progress.line("stderr", `${o.path}: feedback not recorded: ${err instanceof Error ? err.message : String(err)}`);
          },
        ),
      );
    },
  });
  await Promise.all(feedback);
  progress.finish();
  if (streamError !== undefined) process.stderr.write(`stream failed: ${streamError}${unsent.length > 0 ? ` (${unsent.length} files not sent)` : ""}\n`);
  failed += unsent.length;
  const q = computeQuality(pairs);
  process.stdout.write(`samples ${q.samples}  accuracy ${q.accuracy.toFixed(3)}  macro precision ${q.macroPrecision.toFixed(3)}  recall ${q.macroRecall.toFixed(3)}  F1 ${q.macroF1.toFixed(3)}\n`);
  if (failed > 0) process.stderr.write(`failed ${failed} of ${files.length}: the figures cover the ${q.samples} submitted\n`);
  return failed === 0 ? 0 : 1;
}
