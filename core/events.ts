import { create, toBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { ImageClassifiedSchema, ImageDeletedSchema } from "../gen/categorize/v1/events_pb.js";
import { CategoryScoreSchema, ImageInfoSchema, LabelSchema, ModelRefSchema } from "../gen/categorize/v1/types_pb.js";
import { TOPICS } from "../common/kafka.js";
import { injectTraceContext } from "../common/spans.js";
import type { LabelScore } from "./classifier.js";
import type { OutboxEvent, StoredClassification } from "./store/result-store.js";
import type { CategoryAnswer } from "./taxonomy/category-scorer.js";

/** Kafka header naming the answer's most specific category path (e.g. "animal/bird", or "unknown"). */
export const CATEGORY_HEADER = "category";

/**
 * The ImageClassified event of a new answer, keyed by sha256, for the outbox.
 * Built inside the request's trace (the core.store span): its W3C
 * traceparent and tracestate go into the headers, so consumers of the event
 * can continue the trace after the relay publishes it.
 *
 * With category routes, the same event is also written for the topic of the
 * most specific mapped category on the top category's path ("animal/bird",
 * then "animal"): at most one extra copy, so a consumer of a category topic
 * sees each image once. The main topic keeps every event.
 */
export function imageClassifiedEvent(
  stored: StoredClassification,
  requestId: string,
  labels: readonly LabelScore[],
  answer: CategoryAnswer,
  tenant: string,
  routes: Readonly<Record<string, string>> = {},
): OutboxEvent[] {
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
    categories: answer.categories.map((c) => create(CategoryScoreSchema, c)),
    tenant,
  });
  const payload = toBinary(ImageClassifiedSchema, event);
  const headers = { ...injectTraceContext(), "content-type": "application/x-protobuf; messageType=categorize.v1.ImageClassified", [CATEGORY_HEADER]: answer.top.path };
  const events: OutboxEvent[] = [{ eventId, topic: TOPICS.imageClassified, key: stored.sha256, payload, headers }];
  const routed = routeOf(answer.top.path, routes);
  // The outbox row id must be unique; consumers dedupe by the payload's event_id, which both copies share.
  if (routed !== undefined) events.push({ eventId: `${eventId}:${routed}`, topic: routed, key: stored.sha256, payload, headers });
  return events;
}

/** The topic of the longest mapped prefix of a category path, or undefined. */
export function routeOf(path: string, routes: Readonly<Record<string, string>>): string | undefined {
  for (let p = path; p !== ""; p = p.includes("/") ? p.slice(0, p.lastIndexOf("/")) : "") {
    const topic = routes[p];
    if (topic !== undefined) return topic;
  }
  return undefined;
}

/** The ImageDeleted event of an erasure, keyed by sha256, for the outbox (written in the erasure's transaction). */
export function imageDeletedEvent(sha256: string, tenant: string, lastReference: boolean): OutboxEvent {
  const eventId = randomUUID();
  const event = create(ImageDeletedSchema, { eventId, sha256, tenant, lastReference, deletedAtUnixMs: BigInt(Date.now()) });
  return { eventId, topic: TOPICS.imageDeleted, key: sha256, payload: toBinary(ImageDeletedSchema, event), headers: { ...injectTraceContext(), "content-type": "application/x-protobuf; messageType=categorize.v1.ImageDeleted" } };
}
