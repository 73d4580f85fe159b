import { loadConfig, type NodeRole } from "../common/config.js";
import { usageError } from "./arguments.js";
import { startNode } from "./start-node.js";

/** `categorize serve [edge|core|all]`: runs a node until SIGINT or SIGTERM. */
export async function serve(args: string[]): Promise<number> {
  const role = (args[0] ?? "all") as NodeRole;
  if (!["edge", "core", "all"].includes(role)) return usageError(`unknown role '${role}'`);
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
    // SIGHUP: load the configured model and taxonomy again; a new model version is swapped in while serving, a bad taxonomy file keeps the current one.
    process.on("SIGHUP", () => {
      node.core?.reloadModel().then(
        (swapped) => node.logger.info({ swapped }, "model reload finished"),
        (err: unknown) => node.logger.error({ err }, "model reload failed; the current model keeps serving"),
      );
    });
  });
  return 0;
}
