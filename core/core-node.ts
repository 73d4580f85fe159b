import type { ConnectRouter } from "@connectrpc/connect";
import { InferenceService } from "../gen/categorize/v1/inference_pb.js";
import type { Config } from "../common/config.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import type { ReadinessCheck } from "../common/server/readiness.js";
import type { Closable } from "../common/shutdown.js";
import { createClassifier, type Classifier } from "./classifier.js";
import { registerInferenceService } from "./inference-service.js";
import { loadModel } from "./loaded-model.js";
import { resolveModel } from "./model-source.js";
import { migrate } from "./store/migrate.js";
import { createSqlResultStore } from "./store/result-store.js";
import { createPgliteClient, createPostgresClient, type SqlClient } from "./store/sql-client.js";

/** Core's parts, ready to be put on a port. */
export interface CoreNode {
  readonly classifier: Classifier;
  readonly service: typeof InferenceService;
  readonly routes: (router: ConnectRouter) => void;
  readonly checks: readonly ReadinessCheck[];
  /** In the order they were opened; shutdown closes them in reverse. */
  readonly closables: readonly Closable[];
}

/** Opens the result store, resolves, verifies and loads the model, and builds the batcher. */
export async function createCoreNode(config: Config, deps: { logger: Logger; metrics: Metrics; shutdownSignal: AbortSignal }): Promise<CoreNode> {
  const { logger, metrics } = deps;
  const closables: Closable[] = [];
  const db: SqlClient =
    config.store.databaseUrl === undefined
      ? await createPgliteClient({ dataDir: config.store.dataDir === undefined ? undefined : `${config.store.dataDir}/pglite` })
      : createPostgresClient({ url: config.store.databaseUrl, poolMax: config.store.poolMax, statementTimeoutMs: config.store.statementTimeoutMs });
  closables.push({ name: `database (${db.kind})`, close: () => db.close() });
  const migrated = await migrate(db);
  logger.info({ database: db.kind, ...migrated }, "database schema ready");
  const store = createSqlResultStore(db, (op, seconds, failed) => {
    metrics.dbQueryDuration.observe({ op }, seconds);
    if (failed) metrics.dbErrors.inc({ op });
  });

  const resolved = await resolveModel(config.model, logger);
  const model = await loadModel(resolved, config.model);
  closables.push({ name: "model session", close: () => model.runner.close() });
  const m = model.manifest;
  metrics.modelInfo.set({ name: m.name, version: m.version, sha256: m.sha256 }, 1);
  logger.info({ model: m.name, version: m.version, sha256: m.sha256, origin: resolved.origin }, "model loaded");

  const classifier = createClassifier({ model, store, batching: config.batching, metrics });
  await store.registerModel(classifier.model);
  closables.push({ name: "batcher", close: (signal) => classifier.close(signal) });

  return {
    classifier,
    service: InferenceService,
    routes: (router) =>
      registerInferenceService(router, {
        classifier,
        logger,
        maxInFlight: config.batching.streamMaxInFlight,
        maxBatchSize: config.batching.maxBatchSize,
        shutdownSignal: deps.shutdownSignal,
      }),
    checks: [
      { name: "model", check: () => Promise.resolve() },
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
    ],
    closables,
  };
}
