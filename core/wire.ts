import { create } from "@bufbuild/protobuf";
import { ClassifyResponseSchema, type ClassifyResponse } from "../gen/categorize/v1/categorize_pb.js";
import { CategoryScoreSchema, ImageInfoSchema, ItemErrorSchema, LabelSchema, ModelRefSchema, TimingsSchema, type ItemError } from "../gen/categorize/v1/types_pb.js";
import type { CategorizeError } from "../common/errors.js";
import type { Classification } from "./classifier.js";

/** The protobuf answer of a classification. */
export function toClassifyResponse(c: Classification, extra: { requestId: string; totalMs?: number; preprocessMs?: number; cached?: boolean }): ClassifyResponse {
  return create(ClassifyResponseSchema, {
    sha256: c.sha256,
    labels: c.labels.map((l) => create(LabelSchema, l)),
    categories: c.categories.map((x) => create(CategoryScoreSchema, x)),
    model: create(ModelRefSchema, { name: c.model.name, version: c.model.version, sha256: c.model.sha256 }),
    cached: extra.cached ?? c.cached,
    timings: create(TimingsSchema, {
      preprocessMs: extra.preprocessMs ?? c.timings.preprocessMs,
      queueMs: c.timings.queueMs,
      inferenceMs: c.timings.inferenceMs,
      batchSize: c.cached ? 0 : c.timings.batchSize,
      totalMs: extra.totalMs ?? 0,
    }),
    requestId: extra.requestId,
    image: create(ImageInfoSchema, { mime: c.image.mime, sizeBytes: BigInt(c.image.sizeBytes), width: c.image.width, height: c.image.height, objectKey: c.image.objectKey }),
  });
}

export function toItemError(e: CategorizeError): ItemError {
  return create(ItemErrorSchema, { code: e.code, message: e.message, retryable: e.retryable });
}
