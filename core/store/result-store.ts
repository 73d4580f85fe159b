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
  /** Top labels kept readable in SQL (all scores are stored anyway). */
  readonly topLabels: unknown;
  readonly requestId: string;
  /** Builds the event written to the outbox with the answer; none when events are off. */
  readonly event?: ((stored: StoredClassification) => OutboxEvent | readonly OutboxEvent[]) | undefined;
  /** Checks, inside the transaction and under the image's lock, that the stored original exists. */
  readonly verifyObject?: (() => Promise<boolean>) | undefined;
}

/** The dedup and answer store of core nodes. */
export interface ResultStore {
  /** Registers the model once at start. */
  registerModel(model: ModelKey): Promise<void>;
  /** The stored answer of this model for this image (a dedup hit also bumps last seen and hit count). */
  find(sha256: string, model: ModelKey): Promise<StoredClassification | undefined>;
  /** The most recent stored answer of any model. */
  findLatest(sha256: string): Promise<StoredClassification | undefined>;
  /**
   * Stores a new answer and, in the same transaction, its event. When another
   * node stored the same (image, model) first, nothing is written and the
   * stored answer is returned with inserted=false (so exactly one event).
   */
  save(result: StoredClassification, options: SaveOptions): Promise<{ inserted: boolean; stored: StoredClassification }>;
}

