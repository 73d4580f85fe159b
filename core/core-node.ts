import type { ConnectRouter, Transport } from "@connectrpc/connect";
import { InferenceService } from "../gen/categorize/v1/inference_pb.js";
import type { Config } from "../common/config.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import type { ReadinessCheck } from "../common/server/readiness.js";
import type { Closable } from "../common/shutdown.js";
import { createClassifier, type Classifier } from "./classifier.js";
import { loadModel, type LoadedModel } from "./loaded-model.js";
import { createSwappableClassifier } from "./swappable-classifier.js";
import { createInferenceServiceImpl } from "./inference-service.js";
import { createInProcessTransport } from "../common/in-process-transport.js";
import { resolveModel } from "./model-source.js";
import { createJobConsumer, type JobConsumer } from "./job-consumer.js";
import { createOutboxRelay, type OutboxRelay } from "./outbox-relay.js";
import { createRetention, type Retention } from "./retention.js";
import { imageClassifiedEvent } from "./events.js";
import { createFeedback, type Feedback } from "./feedback.js";
import { createErasure, type Erasure } from "./erasure.js";
import { createModelMirror } from "./model-mirror.js";
import type { KafkaBus } from "../common/kafka.js";
import type { ThreadBudget } from "../common/thread-budget.js";
import type { ObjectStore } from "../common/object-store.js";
import { createMemoryRetention } from "./memory-retention.js";
import { openCoreStorage } from "./core-storage.js";
import type { SqlClient } from "./store/sql-client.js";
import { createTaxonomyHolder, type TaxonomyHolder } from "./taxonomy/taxonomy-holder.js";
import type { CategoryScorer } from "./taxonomy/category-scorer.js";
import { Code, CategorizeError } from "../common/errors.js";

/** Core's parts, ready to be put on a port. */
export interface CoreNode {
  readonly classifier: Classifier;
  /** Re-resolves the configured model and reloads the taxonomy; true when a new model version was swapped in. */
  reloadModel(): Promise<boolean>;
  /** The taxonomy in use (replaced on reload). */
  readonly taxonomy: TaxonomyHolder;
  readonly retention: Retention;
  readonly feedback: Feedback;
  /** DeleteImage: one tenant's reference, then the image with its last one. */
  readonly erasure: Erasure;
  readonly relay: OutboxRelay | undefined;
  readonly consumer: JobConsumer | undefined;
  /** The SQL store; undefined for the memory store. */
  readonly db: SqlClient | undefined;
  readonly service: typeof InferenceService;
  readonly routes: (router: ConnectRouter) => void;
  /** InferenceService in this process, without serialization (the embedded node's edge). */
  readonly inProcess: Transport;
  readonly checks: readonly ReadinessCheck[];
  /** In the order they were opened; shutdown closes them in reverse. */
  readonly closables: readonly Closable[];
}

/** Opens the result store, resolves, verifies and loads the model, and builds the batcher. */
export async function createCoreNode(
  config: Config,
  deps: { logger: Logger; metrics: Metrics; shutdownSignal: AbortSignal; objects: ObjectStore; bus: KafkaBus | undefined; budget: ThreadBudget },
): Promise<CoreNode> {
  const { logger, metrics } = deps;
  const closables: Closable[] = [];
  // The taxonomy first: a bad file or route refuses the start before any storage, broker or model is touched.
  const checkRoutes = (scorer: CategoryScorer): CategoryScorer => {
    const paths = new Set(["unknown", ...scorer.taxonomy.categories.map((c) => c.path)]);
    const bad = Object.keys(config.taxonomy.topics).filter((p) => !paths.has(p));
    if (bad.length > 0) throw new CategorizeError(Code.FailedPrecondition, `CATEGORIZE_CATEGORY_TOPICS: unknown categories ${bad.map((b) => `"${b}"`).join(", ")} (the taxonomy has ${[...paths].join(", ")})`);
    return scorer;
  };
  // Resolved against the ImageNet classes now (the default models' 1000), again against the loaded model below.
  const taxonomy = createTaxonomyHolder({ file: config.taxonomy.file, minScore: config.taxonomy.minScore, numClasses: 1000 });
  checkRoutes(taxonomy.scorer);
  const storage = await openCoreStorage(config, logger, metrics);
  closables.push(...storage.closables);
  const { db, store } = storage;

  await deps.objects.ensureReady();
  const bus = deps.bus;
  if (bus !== undefined) {
    // Start-up waits for real broker readiness (metadata, topics with leaders), bounded.
    await bus.ensureTopics(AbortSignal.any([deps.shutdownSignal, AbortSignal.timeout(120_000)]));
  }

  if (bus !== undefined && db === undefined) throw new Error("events need an outbox in SQL: Kafka with the memory store");
  const relay = bus === undefined || db === undefined ? undefined : createOutboxRelay({ db, bus, pollMs: config.kafka.outboxPollMs, batch: config.kafka.outboxBatch, logger, metrics });
  const mirror = deps.objects.kind === "s3" ? createModelMirror(deps.objects) : undefined;
  // The budget's resolved threads, so what is logged and exported is what the sessions get.
  const modelThreads = { ...config.model, intraOpThreads: deps.budget.ortIntraOpThreads, sessions: deps.budget.ortSessions };
  let loaded = await loadModel(await resolveModel(config.model, logger, mirror), modelThreads);
  try {
    taxonomy.use(checkRoutes(taxonomy.load(loaded.manifest.output.numClasses)));
  } catch (err) {
    await loaded.runner.close();
    throw err;
  }
  const logTaxonomy = (scorer: CategoryScorer) =>
    logger.info({ taxonomy: scorer.taxonomy.name, version: scorer.taxonomy.version, categories: scorer.taxonomy.categories.length, file: config.taxonomy.file ?? "default" }, "taxonomy loaded");
  logTaxonomy(taxonomy.scorer);
  const build = async (model: LoadedModel): Promise<Classifier> => {
    const c = createClassifier({
      model,
      store,
      batching: config.batching,
      sessions: model.sessions,
      metrics,
      objects: deps.objects,
      event: bus === undefined ? undefined : (stored, requestId, labels, categories, tenant) => imageClassifiedEvent(stored, requestId, labels, categories, tenant, config.taxonomy.topics),
      categories: () => taxonomy.scorer,
      onSaved: () => relay?.kick(),
    });
    await store.registerModel(c.model);
    const m = model.manifest;
    metrics.modelInfo.reset();
    metrics.modelInfo.set({ name: m.name, version: m.version, sha256: m.sha256 }, 1);
    logger.info({ model: m.name, version: m.version, sha256: m.sha256, origin: model.origin }, "model loaded");
    return c;
  };
  const classifier = createSwappableClassifier(await build(loaded), logger);
  closables.push({ name: "model session", close: () => loaded.runner.close() });
  let reloading: Promise<boolean> | undefined;
  /** Loads the configured model again; a new version is swapped in beside the old one without failing requests. */
  const reloadModel = (): Promise<boolean> => {
    reloading ??= (async () => {
      const next = await loadModel(await resolveModel(config.model, logger, mirror), modelThreads);
      let scorer: CategoryScorer;
      try {
        // A bad taxonomy file fails the reload as a whole: the current model and taxonomy keep serving.
        scorer = checkRoutes(taxonomy.load(next.manifest.output.numClasses));
      } catch (err) {
        await next.runner.close();
        throw err;
      }
      const same = next.manifest.sha256 === loaded.manifest.sha256 && next.manifest.version === loaded.manifest.version;
      if (same) {
        await next.runner.close();
        taxonomy.use(scorer);
        logTaxonomy(scorer);
        return false;
      }
      taxonomy.use(scorer);
      logTaxonomy(scorer);
      const previous = loaded;
      loaded = next;
      await classifier.swap(await build(next), () => previous.runner.close(), config.shutdownGraceMs);
      return true;
    })().finally(() => (reloading = undefined));
    return reloading;
  };
  const feedback = createFeedback({ store: storage.feedback, model: () => classifier.model, taxonomy: () => taxonomy.scorer.taxonomy, numClasses: loaded.manifest.output.numClasses, labels: () => loaded.labels, windowHours: config.qualityWindowHours, metrics });
  feedback.start(deps.shutdownSignal);
  if (relay !== undefined) {
    relay.start(deps.shutdownSignal);
    closables.push({ name: "outbox relay", close: (signal) => relay.close(signal) });
  }
  const retention =
    storage.db === undefined
      ? createMemoryRetention({ store: storage.memory, days: config.objects.retentionDays, intervalMs: config.objects.retentionIntervalMs, logger, metrics })
      : createRetention({ db: storage.db, objects: deps.objects, days: config.objects.retentionDays, batch: config.objects.retentionBatch, intervalMs: config.objects.retentionIntervalMs, orphanGraceMs: config.objects.orphanGraceMs, logger, metrics });
  retention.start(deps.shutdownSignal);
  closables.push({ name: "batcher", close: (signal) => classifier.close(signal) });
  let consumer: JobConsumer | undefined;
  if (bus !== undefined && config.kafka.asyncConsumer) {
    consumer = createJobConsumer({ bus, groupId: config.kafka.consumerGroup, classifier, maxAttempts: config.kafka.jobMaxAttempts, concurrency: config.batching.maxBatchSize * 2, logger, metrics });
    await consumer.start();
    const c = consumer;
    // Closed before the batcher: in-flight jobs finish, their offsets commit.
    closables.push({ name: "job consumer", close: () => c.close() });
  }
  if (db !== undefined) {
    const dbStats = setInterval(() => {
      collectDbStats(db, metrics).catch(() => undefined);
    }, 15_000);
    dbStats.unref();
    closables.push({ name: "db stats", close: () => Promise.resolve(clearInterval(dbStats)) });
  }

  const erasure = createErasure({ store, db, objects: deps.objects, events: relay !== undefined, onEvent: () => relay?.kick(), logger });
  const impl = createInferenceServiceImpl({
    classifier,
    feedback,
    taxonomy,
    erasure,
    logger,
    maxInFlight: config.batching.streamMaxInFlight,
    maxBatchSize: config.batching.maxBatchSize,
    shutdownSignal: deps.shutdownSignal,
  });
  return {
    classifier,
    reloadModel,
    taxonomy,
    feedback,
    erasure,
    retention,
    relay,
    consumer,
    db,
    service: InferenceService,
    routes: (router) => router.service(InferenceService, impl),
    inProcess: createInProcessTransport(InferenceService, impl),
    checks: [
      { name: "model", check: () => Promise.resolve() },
      // The memory store has no database to check.
      ...(db === undefined
        ? []
        : [
            {
              name: "database",
              check: async () => {
                await db.query("SELECT 1");
                const s = db.poolStats();
                metrics.dbPool.set({ state: "total" }, s.total);
                metrics.dbPool.set({ state: "idle" }, s.idle);
                metrics.dbPool.set({ state: "waiting" }, s.waiting);
              },
            },
          ]),
      { name: "objects", check: (signal) => deps.objects.ping(signal) },
      // Events wait in the Postgres outbox and jobs in Kafka itself: a broker outage degrades, it does not stop classification.
      ...(bus === undefined ? [] : [{ name: "kafka", critical: false, check: () => bus.ping() }]),
    ],
    closables,
  };
}

/** Database size and table growth, for dashboards and the size-budget alert. */
async function collectDbStats(db: SqlClient, metrics: Metrics): Promise<void> {
  const [size] = await db.query<{ bytes: string | number }>(`SELECT pg_database_size(current_database()) AS bytes`);
  metrics.dbSize.set(Number(size?.bytes ?? 0));
  const rows = await db.query<{ table: string; n: string | number }>(
    `SELECT relname AS table, GREATEST(reltuples, 0)::bigint AS n FROM pg_class
      WHERE relname IN ('images', 'classifications', 'feedback', 'outbox', 'models') AND relkind = 'r'`,
  );
  for (const r of rows) metrics.dbRows.set({ table: r.table }, Number(r.n));
}
