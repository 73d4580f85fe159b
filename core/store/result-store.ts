/** A model as recorded with its answers. */
export interface ModelKey {
  readonly name: string;
  readonly version: string;
  readonly sha256: string;
  readonly source: string;
}

/** One string per model (name, version, sha256), to key maps by model. */
export const modelKeyOf = (m: ModelKey): string => `${m.name}\u0000${m.version}\u0000${m.sha256}`;

export interface ImageFacts {
  readonly sha256: string;
  readonly sizeBytes: number;
  readonly mime: string;
  readonly width: number;
  readonly height: number;
  readonly objectKey: string;
}

export interface StoredTimings {
  readonly preprocessMs: number;
  readonly queueMs: number;
  readonly inferenceMs: number;
  readonly batchSize: number;
}

/** One model's stored answer for one image. */
export interface StoredClassification {
  readonly sha256: string;
  readonly model: ModelKey;
  /** Probability of every class, in class order. */
  readonly scores: Float32Array;
  readonly timings: StoredTimings;
  readonly image: ImageFacts;
  readonly createdAt: Date;
}

/** An event to publish once the transaction that produced it commits. */
export interface OutboxEvent {
  readonly eventId: string;
  readonly topic: string;
  readonly key: string;
  readonly payload: Uint8Array;
  readonly headers: Readonly<Record<string, string>>;
}

export interface SaveOptions {
  /** The tenant whose request produced the answer: its reference is recorded in the same transaction. */
  readonly tenant: string;
  /** Top labels kept readable in SQL (all scores are stored anyway). */
  readonly topLabels: unknown;
  readonly requestId: string;
  /** Builds the event written to the outbox with the answer; none when events are off. */
  readonly event?: ((stored: StoredClassification) => OutboxEvent | readonly OutboxEvent[]) | undefined;
  /** Checks, inside the transaction and under the image's lock, that the stored original exists. */
  readonly verifyObject?: (() => Promise<boolean>) | undefined;
}

/** A shared answer as one tenant finds it. */
export interface TenantHit {
  readonly stored: StoredClassification;
  /** Whether this tenant had sent the image before (its `cached`); false on its first request. */
  readonly seenBefore: boolean;
}

/** What erasing one tenant's reference did. */
export interface ForgetOutcome {
  /** False when this tenant had no reference (nothing was changed). */
  readonly found: boolean;
  /** No tenant references the image any more: its rows went and its original is recorded for removal. */
  readonly lastReference: boolean;
  /** The original recorded in object_deletions (step 1 of the two-step removal), to be removed now. */
  readonly objectKey: string | undefined;
}

/**
 * The dedup and answer store of core nodes. Answers are shared by all
 * tenants (one inference per image); each tenant's reference to an image is
 * its own row, written in the same statements as the lookups and saves.
 */
export interface ResultStore {
  /** Registers the model once at start. */
  registerModel(model: ModelKey): Promise<void>;
  /**
   * The stored answer of this model for this image. A dedup hit also bumps
   * last seen and hit count and records this tenant's reference in the same
   * statement, saying whether the tenant had one before.
   */
  find(sha256: string, model: ModelKey, tenant: string): Promise<TenantHit | undefined>;
  /** The most recent stored answer of any model, only for an image this tenant references. */
  findLatest(sha256: string, tenant: string): Promise<StoredClassification | undefined>;
  /**
   * Stores a new answer, this tenant's reference and, in the same
   * transaction, its event. When another node stored the same (image, model)
   * first, no answer is written and the stored one is returned with
   * inserted=false (so exactly one event).
   */
  save(result: StoredClassification, options: SaveOptions): Promise<{ inserted: boolean; stored: StoredClassification; seenBefore: boolean }>;
  /**
   * Step 1 of an erasure, in one transaction: this tenant's reference and
   * feedback go; when no tenant references the image any more its rows go
   * too and its original is recorded in object_deletions; the event built by
   * `event` goes to the outbox.
   */
  forget(sha256: string, tenant: string, options: { event?: ((lastReference: boolean) => OutboxEvent) | undefined }): Promise<ForgetOutcome>;
}

