import type { Config } from "../common/config.js";
import type { Logger } from "../common/logger.js";
import { fetchCatalogModel, type ModelMirror } from "./model-fetch.js";
import { resolveLocalModel, type ResolvedModel } from "./model-manifest.js";

/**
 * CATEGORIZE_MODEL set: a local manifest or .onnx file, verified.
 * Unset: the catalog's default model from the cache, else from the hub.
 */
export async function resolveModel(model: Config["model"], logger: Logger, mirror?: ModelMirror): Promise<ResolvedModel> {
  if (model.ref !== undefined) return resolveLocalModel(model.ref);
  return fetchCatalogModel({ cacheDir: model.cacheDir, hubEndpoint: model.hubEndpoint, hubToken: model.hubToken, logger, mirror });
}
