import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { parseArgs } from "node:util";
import { createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { CategorizeService } from "../gen/categorize/v1/categorize_pb.js";
import { ConfigError, loadConfig, type NodeRole } from "../common/config.js";
import { createLogger } from "../common/logger.js";
import { fetchCatalogModel } from "../core/model-fetch.js";
import { computeQuality } from "../core/quality.js";
import { startNode } from "./start-node.js";

const usage = `usage:
  categorize serve [edge|core|all]            run a node (default: all, the embedded single process)
  categorize classify FILE... [--edge URL] [--json] [--top-k N]
  categorize model fetch                      fetch and verify the catalog's default model into the cache
  categorize evaluate DIR [--edge URL]        classify a labelled folder (DIR/expected.tsv) and submit its feedback
configuration comes from the environment; see the README.`;

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return serve((rest[0] ?? "all") as NodeRole);
    case "classify":
      return classify(rest);
    case "model":
      return model(rest);
    case "evaluate":
      return evaluate(rest);
    case undefined:
    case "help":
    case "--help":
      process.stdout.write(`${usage}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command '${command}'\n${usage}\n`);
      return 2;
  }
}

async function serve(role: NodeRole): Promise<number> {
  if (!["edge", "core", "all"].includes(role)) {
    process.stderr.write(`unknown role '${role}'\n${usage}\n`);
    return 2;
  }
  const config = loadConfig(role, process.env);
  const node = await startNode(config);
  // A last guard: a bug that leaves a promise unobserved is logged, and the node keeps serving.
  process.on("unhandledRejection", (err) => node.logger.error({ err }, "unhandled rejection"));
  if (config.role !== "core") node.logger.info(`open ${node.url}/ in a browser, or call categorize.v1.CategorizeService on ${node.url}`);
  await new Promise<void>((resolve) => {
    const stop = (signal: NodeJS.Signals) => {
      process.off("SIGINT", stop);
      process.off("SIGTERM", stop);
      node.stop(signal).then(resolve, resolve);
    };
    process.on("SIGINT", stop);
    process.on("SIGTERM", stop);
    // SIGHUP: load the configured model again; a new version is swapped in while serving.
    process.on("SIGHUP", () => {
      node.core?.reloadModel().then(
        (swapped) => node.logger.info({ swapped }, "model reload finished"),
        (err: unknown) => node.logger.error({ err }, "model reload failed; the current model keeps serving"),
      );
    });
  });
  return 0;
}

async function classify(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args,
    allowPositionals: true,
    options: { edge: { type: "string", default: "http://127.0.0.1:8080" }, json: { type: "boolean", default: false }, "top-k": { type: "string", default: "5" } },
  });
  if (positionals.length === 0) {
    process.stderr.write(`classify needs at least one file\n${usage}\n`);
    return 2;
  }
  const client = createClient(CategorizeService, createGrpcTransport({ baseUrl: values.edge }));
  let failed = 0;
  for (const file of positionals) {
    try {
      const res = await client.classify({ image: await readFile(file), topK: Number(values["top-k"]) }, { timeoutMs: 60_000 });
      if (values.json) {
        process.stdout.write(`${JSON.stringify({ file, sha256: res.sha256, cached: res.cached, model: res.model, labels: res.labels.map((l) => ({ index: l.index, name: l.name, score: l.score })) })}\n`);
      } else {
        process.stdout.write(`${file}\n`);
        for (const l of res.labels) process.stdout.write(`  ${(l.score * 100).toFixed(1).padStart(5)} %  ${l.name} [${l.index}]\n`);
      }
    } catch (err) {
      failed++;
      process.stderr.write(`${file}: ${err instanceof Error ? err.message : String(err)}\n`);
    }
  }
  return failed === 0 ? 0 : 1;
}

async function evaluate(args: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args, allowPositionals: true, options: { edge: { type: "string", default: "http://127.0.0.1:8080" } } });
  const dir = positionals[0];
  if (dir === undefined) {
    process.stderr.write(`evaluate needs a folder with expected.tsv\n${usage}\n`);
    return 2;
  }
  const client = createClient(CategorizeService, createGrpcTransport({ baseUrl: values.edge }));
  const rows = (await readFile(join(dir, "expected.tsv"), "utf8")).trim().split("\n").slice(1).map((l) => l.split("\t"));
  const pairs: { truth: number; predicted: number }[] = [];
  for (const [file, , , acceptTop1] of rows) {
    if (file === undefined || acceptTop1 === undefined || acceptTop1 === "-") continue;
    const accepted = acceptTop1.split("|").map(Number);
    const res = await client.classify({ image: await readFile(join(dir, file)) }, { timeoutMs: 60_000 });
    const predicted = res.labels[0]?.index ?? -1;
    // Any acceptable class counts as the truth when the model chose it; otherwise the first listed.
    const truth = accepted.includes(predicted) ? predicted : accepted[0]!;
    await client.submitFeedback({ sha256: res.sha256, trueClass: truth, source: `eval:${basename(dir)}` });
    pairs.push({ truth, predicted });
    process.stdout.write(`${truth === predicted ? "ok  " : "MISS"} ${file}: predicted ${predicted} ${res.labels[0]?.name ?? ""}, true ${truth}\n`);
  }
  const q = computeQuality(pairs);
  process.stdout.write(`samples ${q.samples}  accuracy ${q.accuracy.toFixed(3)}  macro precision ${q.macroPrecision.toFixed(3)}  recall ${q.macroRecall.toFixed(3)}  F1 ${q.macroF1.toFixed(3)}\n`);
  return 0;
}

async function model(args: string[]): Promise<number> {
  if (args[0] !== "fetch") {
    process.stderr.write(`${usage}\n`);
    return 2;
  }
  const config = loadConfig("core", process.env);
  const logger = createLogger({ level: config.logLevel, service: "categorize-model-fetch", nodeId: config.nodeId });
  const resolved = await fetchCatalogModel({ cacheDir: config.model.cacheDir, hubEndpoint: config.model.hubEndpoint, hubToken: config.model.hubToken, logger });
  logger.info({ model: resolved.manifest.name, version: resolved.manifest.version, path: resolved.modelPath, origin: resolved.origin }, "model ready");
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    if (err instanceof ConfigError) process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`categorize: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
