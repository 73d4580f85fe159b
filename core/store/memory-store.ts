import { CategorizeError, Code, unavailable } from "../../common/errors.js";
import type { FeedbackStore, TenantPrediction } from "./feedback-store.js";
import { modelKeyOf, type ImageFacts, type ResultStore, type StoredClassification } from "./result-store.js";

interface Answer {
  readonly stored: StoredClassification;
  /** Top-1 class as the SQL store keeps it in labels[0] (ties broken by index). */
  readonly predicted: number;
}

interface ImageEntry {
  readonly image: ImageFacts;
  lastSeen: number;
  hitCount: number;
  /** Answers by model key, in the order they were stored. */
  readonly answers: Map<string, Answer>;
  /** Last seen (epoch ms) by tenant: the tenants that sent the image. */
  readonly refs: Map<string, number>;
}

interface FeedbackRecord {
  readonly tenant: string;
  readonly sha256: string;
  readonly trueClass: number;
  readonly createdAt: number;
}

/** The in-process store of a node without durable storage, with the retention it needs. */
export interface MemoryStore {
  readonly results: ResultStore;
  readonly feedback: FeedbackStore;
  /**
   * Removes tenant references not seen since `cutoff` (epoch ms) with their
   * feedback, then images no tenant references with their answers; returns
   * how many images went.
   */
  expire(cutoff: number): number;
  /** Images held now. */
  size(): number;
}

function top1(scores: Float32Array, labels: unknown): number {
  const first = Array.isArray(labels) ? (labels[0] as { index?: unknown } | undefined) : undefined;
  if (typeof first?.index === "number") return first.index;
  let best = 0;
  for (let i = 1; i < scores.length; i++) if (scores[i]! > scores[best]!) best = i;
  return best;
}

/**
 * The embedded node's store when nothing on disk is asked for (no DATA_DIR,
 * no DATABASE_URL, no Kafka): the same ResultStore and FeedbackStore ports as
 * Postgres with the same answers, dedup and hit counting, held in memory and
 * bounded. Such a node loses everything at exit whichever store it uses (the
 * previous default was PGlite in memory), so it pays no SQL engine on its
 * event loop for it (PGlite took about a third of the main thread's CPU and
 * 500 MB of RSS). Past `maxImages` the least recently used image and its
 * answers go, as retention would remove them; the next request for it is
 * classified again. It has no outbox: a node with events has durable storage.
 */
export function createMemoryStore(options: { maxImages: number; maxFeedback?: number; now?: () => number }): MemoryStore {
  const now = options.now ?? Date.now;
  const maxFeedback = options.maxFeedback ?? 100_000;
  // A Map iterates in insertion order: re-inserting on use keeps it in LRU order.
  const images = new Map<string, ImageEntry>();
  let feedback: FeedbackRecord[] = [];

  const touch = (sha256: string, e: ImageEntry) => {
    images.delete(sha256);
    images.set(sha256, e);
  };
  const evict = () => {
    while (images.size > options.maxImages) {
      const oldest = images.keys().next();
      if (oldest.done === true) return;
      images.delete(oldest.value);
    }
  };
  const latest = (e: ImageEntry): Answer | undefined => {
    let best: Answer | undefined;
    for (const a of e.answers.values()) if (best === undefined || a.stored.createdAt.getTime() >= best.stored.createdAt.getTime()) best = a;
    return best;
  };

  /** Records this tenant's reference; true when it had one before. */
  const refer = (e: ImageEntry, tenant: string): boolean => {
    const before = e.refs.has(tenant);
    e.refs.set(tenant, now());
    return before;
  };

  const results: ResultStore = {
    registerModel: () => Promise.resolve(),
    find(sha256, model, tenant) {
      const e = images.get(sha256);
      const a = e?.answers.get(modelKeyOf(model));
      if (e === undefined || a === undefined) return Promise.resolve(undefined);
      e.lastSeen = now();
      e.hitCount++;
      touch(sha256, e);
      return Promise.resolve({ stored: a.stored, seenBefore: refer(e, tenant) });
    },
    findLatest(sha256, tenant) {
      const e = images.get(sha256);
      return Promise.resolve(e === undefined || !e.refs.has(tenant) ? undefined : latest(e)?.stored);
    },
    forget(sha256, tenant, { event }) {
      if (event !== undefined) return Promise.reject(new CategorizeError(Code.Internal, "the memory store has no outbox; a node with events needs Postgres or DATA_DIR"));
      const e = images.get(sha256);
      if (e === undefined || !e.refs.delete(tenant)) return Promise.resolve({ found: false, lastReference: false, objectKey: undefined });
      feedback = feedback.filter((f) => f.tenant !== tenant || f.sha256 !== sha256);
      const lastReference = e.refs.size === 0;
      // A memory node keeps no originals: nothing to record for removal.
      if (lastReference) images.delete(sha256);
      return Promise.resolve({ found: true, lastReference, objectKey: undefined });
    },
    async save(result, { topLabels, event, verifyObject, tenant }) {
      if (event !== undefined) throw new CategorizeError(Code.Internal, "the memory store has no outbox; a node with events needs Postgres or DATA_DIR");
      if (verifyObject !== undefined && !(await verifyObject())) throw unavailable("the stored original vanished (retention ran); send the image again");
      const key = modelKeyOf(result.model);
      let e = images.get(result.sha256);
      const existing = e?.answers.get(key);
      if (e !== undefined && existing !== undefined) {
        e.lastSeen = now();
        return { inserted: false, stored: existing.stored, seenBefore: refer(e, tenant) };
      }
      if (e === undefined) {
        e = { image: result.image, lastSeen: now(), hitCount: 0, answers: new Map(), refs: new Map() };
        images.set(result.sha256, e);
        evict();
      } else {
        e.lastSeen = now();
        touch(result.sha256, e);
      }
      // Stored as the SQL store returns it: the image facts of the first save win.
      const stored: StoredClassification = { ...result, image: e.image };
      e.answers.set(key, { stored, predicted: top1(result.scores, topLabels) });
      return { inserted: true, stored, seenBefore: refer(e, tenant) };
    },
  };

  const feedbackStore: FeedbackStore = {
    predictedClass(sha256, model, tenant) {
      const e = images.get(sha256);
      return Promise.resolve(e?.refs.has(tenant) === true ? e.answers.get(modelKeyOf(model))?.predicted : undefined);
    },
    insert({ tenant, sha256, trueClass }) {
      feedback.push({ tenant, sha256, trueClass, createdAt: now() });
      if (feedback.length > maxFeedback) feedback = feedback.slice(feedback.length - maxFeedback);
      return Promise.resolve();
    },
    window(model, windowHours, tenant) {
      const since = now() - windowHours * 3_600_000;
      const key = modelKeyOf(model);
      const latestByRef = new Map<string, FeedbackRecord>();
      for (const f of feedback) if (f.createdAt > since && (tenant === undefined || f.tenant === tenant)) latestByRef.set(`${f.tenant}\u0000${f.sha256}`, f);
      const out: TenantPrediction[] = [];
      for (const f of latestByRef.values()) {
        const a = images.get(f.sha256)?.answers.get(key);
        if (a !== undefined) out.push({ tenant: f.tenant, truth: f.trueClass, predicted: a.predicted });
      }
      return Promise.resolve(out);
    },
  };

  return {
    results,
    feedback: feedbackStore,
    expire(cutoff) {
      let removed = 0;
      const expiredRefs = new Set<string>();
      for (const [sha256, e] of images) {
        // Retention applies per tenant reference; the image goes with its last one.
        for (const [tenant, seen] of e.refs) {
          if (seen < cutoff) {
            e.refs.delete(tenant);
            expiredRefs.add(`${tenant}\u0000${sha256}`);
          }
        }
        if (e.refs.size === 0 && e.lastSeen < cutoff) {
          images.delete(sha256);
          removed++;
        }
      }
      if (expiredRefs.size > 0) feedback = feedback.filter((f) => !expiredRefs.has(`${f.tenant}\u0000${f.sha256}`));
      return removed;
    },
    size: () => images.size,
  };
}
