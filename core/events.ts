import { create, toBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { ImageClassifiedSchema, ImageDeletedSchema } from "../gen/categorize/v1/events_pb.js";
import { ImageInfoSchema, LabelSchema, ModelRefSchema } from "../gen/categorize/v1/types_pb.js";
import { TOPICS } from "../common/kafka.js";
import { injectTraceContext } from "../common/spans.js";
import type { LabelScore } from "./classifier.js";
import type { OutboxEvent, StoredClassification } from "./store/result-store.js";

/**
 * The ImageClassified event of a new answer, keyed by sha256, for the outbox.
 * Built inside the request's trace (the core.store span): its W3C
 * traceparent and tracestate go into the headers, so consumers of the event
 * can continue the trace after the relay publishes it.
 */
export function imageClassifiedEvent(stored: StoredClassification, requestId: string, labels: readonly LabelScore[], tenant: string): OutboxEvent {
  const eventId = randomUUID();
  const event = create(ImageClassifiedSchema, {
    eventId,
    sha256: stored.sha256,
    model: create(ModelRefSchema, { name: stored.model.name, version: stored.model.version, sha256: stored.model.sha256 }),
    labels: labels.map((l) => create(LabelSchema, l)),
    image: create(ImageInfoSchema, {
      mime: stored.image.mime,
      sizeBytes: BigInt(stored.image.sizeBytes),
      width: stored.image.width,
      height: stored.image.height,
      objectKey: stored.image.objectKey,
    }),
    classifiedAtUnixMs: BigInt(stored.createdAt.getTime()),
    requestId,
    tenant,
  });
  return { eventId, topic: TOPICS.imageClassified, key: stored.sha256, payload: toBinary(ImageClassifiedSchema, event), headers: { ...injectTraceContext(), "content-type": "application/x-protobuf; messageType=categorize.v1.ImageClassified" } };
}

/** The ImageDeleted event of an erasure, keyed by sha256, for the outbox (written in the erasure's transaction). */
export function imageDeletedEvent(sha256: string, tenant: string, lastReference: boolean): OutboxEvent {
  const eventId = randomUUID();
  const event = create(ImageDeletedSchema, { eventId, sha256, tenant, lastReference, deletedAtUnixMs: BigInt(Date.now()) });
  return { eventId, topic: TOPICS.imageDeleted, key: sha256, payload: toBinary(ImageDeletedSchema, event), headers: { ...injectTraceContext(), "content-type": "application/x-protobuf; messageType=categorize.v1.ImageDeleted" } };
}
