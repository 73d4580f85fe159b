import { loadConfig } from "../common/config.js";
import { createLogger } from "../common/logger.js";
import { fetchCatalogModel } from "../core/model-fetch.js";
import { usageError } from "./arguments.js";

/** `categorize model fetch`: downloads and verifies the catalog's default model into the cache. */
export async function model(args: string[]): Promise<number> {
  if (args[0] !== "fetch") return usageError(`unknown model command '${args[0] ?? ""}'`);
  const config = loadConfig("core", process.env);
  const logger = createLogger({ level: config.logLevel, service: "categorize-model-fetch", nodeId: config.nodeId });
  const resolved = await fetchCatalogModel({ cacheDir: config.model.cacheDir, hubEndpoint: config.model.hubEndpoint, hubToken: config.model.hubToken, logger });
  logger.info({ model: resolved.manifest.name, version: resolved.manifest.version, path: resolved.modelPath, origin: resolved.origin }, "model ready");
  return 0;
}
