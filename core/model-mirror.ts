import type { ObjectStore } from "../common/object-store.js";
import type { ModelMirror } from "./model-fetch.js";

/** The S3 bucket as the model mirror: nodes and restarts fetch from it instead of the hub. */
export function createModelMirror(objects: ObjectStore): ModelMirror {
  return {
    get: (key, path) => objects.getFile(key, path),
    put: (key, path) => objects.putFile(key, path, "application/octet-stream"),
  };
}
