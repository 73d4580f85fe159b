import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from "prom-client";

/**
 * Every metric family a node exports, on one registry per process.
 * Names follow Prometheus conventions with a `categorize_` prefix (process and
 * runtime metrics keep prom-client's standard names); labels are
 * bounded enums (never a hash, id or other user input).
 */
export interface Metrics {
  readonly registry: Registry;
  readonly rpcRequests: Counter<"service" | "method" | "code">;
  readonly rpcDuration: Histogram<"service" | "method">;
  readonly rpcInFlight: Gauge<"service" | "method">;
  readonly rpcReceivedBytes: Counter<"service" | "method">;
  readonly preprocessDuration: Histogram;
  readonly preprocessRejections: Counter<"reason">;
  readonly queueWait: Histogram;
  readonly inferenceDuration: Histogram;
  readonly batchSize: Histogram;
  readonly batchQueueDepth: Gauge;
  readonly inferenceErrors: Counter<"kind">;
  readonly modelInfo: Gauge<"name" | "version" | "sha256">;
  readonly threadBudget: Gauge<"kind">;
  readonly edgeCache: Counter<"result">;
  readonly coalesced: Counter;
  readonly dedup: Counter<"result">;
  readonly coreStreams: Gauge<"state">;
  readonly coreRetries: Counter<"reason">;
  readonly coreInFlight: Gauge;
  readonly s3Duration: Histogram<"op">;
  readonly s3Errors: Counter<"op">;
  readonly dbQueryDuration: Histogram<"op">;
  readonly dbErrors: Counter<"op">;
  readonly dbPool: Gauge<"state">;
  readonly dbSize: Gauge;
  readonly dbRows: Gauge<"table">;
  readonly retentionRemoved: Counter<"kind">;
  readonly kafkaSendDuration: Histogram<"topic">;
  readonly kafkaSendErrors: Counter<"topic">;
  readonly outboxBacklog: Gauge;
  readonly outboxOldestAge: Gauge;
  readonly consumerLag: Gauge<"topic" | "partition">;
  readonly deadLetters: Counter<"reason">;
  readonly kafkaUp: Gauge;
  readonly jobsProcessed: Counter<"result">;
  readonly dependencyUp: Gauge<"dependency">;
  readonly ready: Gauge;
  readonly feedbackTotal: Counter;
  readonly qualityAccuracy: Gauge;
  readonly qualityMacroPrecision: Gauge;
  readonly qualityMacroRecall: Gauge;
  readonly qualityMacroF1: Gauge;
  readonly qualitySamples: Gauge;
  /** Quality over top-level categories of the taxonomy in use, by figure (accuracy, macro_precision, macro_recall, macro_f1). */
  readonly categoryQuality: Gauge<"figure">;
}

// Inference is milliseconds-scale; these resolve 0.5 ms to 10 s.
const latencyBuckets = [0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.015, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

/** Creates the registry and all metric families of one process. */
export function createMetrics(defaultLabels: Record<string, string> = {}): Metrics {
  const registry = new Registry();
  registry.setDefaultLabels(defaultLabels);
  // Standard names (process_*, nodejs_*), as the common Node.js dashboards and alerts expect; our own metrics carry categorize_.
  collectDefaultMetrics({ register: registry });
  const r = [registry];
  return {
    registry,
    rpcRequests: new Counter({ name: "categorize_rpc_requests_total", help: "Completed RPCs by service, method and gRPC code.", labelNames: ["service", "method", "code"], registers: r }),
    rpcDuration: new Histogram({ name: "categorize_rpc_duration_seconds", help: "RPC handling time.", labelNames: ["service", "method"], buckets: latencyBuckets, registers: r }),
    rpcInFlight: new Gauge({ name: "categorize_rpc_in_flight", help: "RPCs being handled now.", labelNames: ["service", "method"], registers: r }),
    rpcReceivedBytes: new Counter({ name: "categorize_rpc_received_bytes_total", help: "Image bytes received by RPCs.", labelNames: ["service", "method"], registers: r }),
    preprocessDuration: new Histogram({ name: "categorize_preprocess_duration_seconds", help: "Decode, orient, resize and crop time on the edge.", buckets: latencyBuckets, registers: r }),
    preprocessRejections: new Counter({ name: "categorize_preprocess_rejections_total", help: "Images refused before or during decode, by reason.", labelNames: ["reason"], registers: r }),
    queueWait: new Histogram({ name: "categorize_batch_queue_wait_seconds", help: "Time an item waited in the batcher queue.", buckets: latencyBuckets, registers: r }),
    inferenceDuration: new Histogram({ name: "categorize_inference_duration_seconds", help: "Model run time of one batch.", buckets: latencyBuckets, registers: r }),
    batchSize: new Histogram({ name: "categorize_batch_size", help: "Items per model run.", buckets: [1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64], registers: r }),
    batchQueueDepth: new Gauge({ name: "categorize_batch_queue_depth", help: "Items waiting in the batcher queue.", registers: r }),
    inferenceErrors: new Counter({ name: "categorize_inference_errors_total", help: "Inference failures by kind.", labelNames: ["kind"], registers: r }),
    modelInfo: new Gauge({ name: "categorize_model_info", help: "The loaded model (value 1).", labelNames: ["name", "version", "sha256"], registers: r }),
    edgeCache: new Counter({ name: "categorize_edge_cache_requests_total", help: "Edge LRU lookups by result (hit, miss).", labelNames: ["result"], registers: r }),
    coalesced: new Counter({ name: "categorize_edge_coalesced_requests_total", help: "Requests that joined an identical in-flight request.", registers: r }),
    dedup: new Counter({ name: "categorize_dedup_lookups_total", help: "Result-store lookups before inference by result (hit, miss).", labelNames: ["result"], registers: r }),
    coreStreams: new Gauge({ name: "categorize_edge_core_streams", help: "Edge streams to core nodes by state.", labelNames: ["state"], registers: r }),
    coreRetries: new Counter({ name: "categorize_edge_core_retries_total", help: "Requests re-sent to another core, by reason.", labelNames: ["reason"], registers: r }),
    coreInFlight: new Gauge({ name: "categorize_edge_core_in_flight", help: "Requests sent to cores and not yet answered.", registers: r }),
    s3Duration: new Histogram({ name: "categorize_s3_operation_duration_seconds", help: "Object store operation time.", labelNames: ["op"], buckets: latencyBuckets, registers: r }),
    s3Errors: new Counter({ name: "categorize_s3_operation_errors_total", help: "Object store operation failures.", labelNames: ["op"], registers: r }),
    dbQueryDuration: new Histogram({ name: "categorize_db_query_duration_seconds", help: "Database operation time.", labelNames: ["op"], buckets: latencyBuckets, registers: r }),
    dbErrors: new Counter({ name: "categorize_db_errors_total", help: "Database operation failures.", labelNames: ["op"], registers: r }),
    dbPool: new Gauge({ name: "categorize_db_pool_connections", help: "Database pool connections by state (total, idle, waiting).", labelNames: ["state"], registers: r }),
    dbSize: new Gauge({ name: "categorize_db_size_bytes", help: "Size of the database.", registers: r }),
    dbRows: new Gauge({ name: "categorize_db_rows", help: "Estimated rows of the main tables.", labelNames: ["table"], registers: r }),
    retentionRemoved: new Counter({ name: "categorize_retention_removed_total", help: "Images removed by retention cleanup (objects and rows).", labelNames: ["kind"], registers: r }),
    kafkaSendDuration: new Histogram({ name: "categorize_kafka_send_duration_seconds", help: "Producer send time (acked by all in-sync replicas).", labelNames: ["topic"], buckets: latencyBuckets, registers: r }),
    kafkaSendErrors: new Counter({ name: "categorize_kafka_send_errors_total", help: "Producer send failures.", labelNames: ["topic"], registers: r }),
    outboxBacklog: new Gauge({ name: "categorize_outbox_backlog", help: "Outbox events not yet on Kafka.", registers: r }),
    outboxOldestAge: new Gauge({ name: "categorize_outbox_oldest_age_seconds", help: "Age of the oldest unpublished outbox event.", registers: r }),
    consumerLag: new Gauge({ name: "categorize_kafka_consumer_lag", help: "Messages behind the log end for the async job group.", labelNames: ["topic", "partition"], registers: r }),
    deadLetters: new Counter({ name: "categorize_dead_letters_total", help: "Messages sent to the dead-letter topic.", labelNames: ["reason"], registers: r }),
    kafkaUp: new Gauge({ name: "categorize_kafka_up", help: "1 when the broker answered the last metadata request.", registers: r }),
    jobsProcessed: new Counter({ name: "categorize_async_jobs_total", help: "Async classification jobs by result.", labelNames: ["result"], registers: r }),
    dependencyUp: new Gauge({ name: "categorize_dependency_up", help: "1 when a readiness check passes, by dependency.", labelNames: ["dependency"], registers: r }),
    ready: new Gauge({ name: "categorize_ready", help: "1 when the node is ready to serve.", registers: r }),
    feedbackTotal: new Counter({ name: "categorize_feedback_total", help: "Feedback records received.", registers: r }),
    qualityAccuracy: new Gauge({ name: "categorize_model_accuracy_ratio", help: "Top-1 accuracy over the feedback window.", registers: r }),
    qualityMacroPrecision: new Gauge({ name: "categorize_model_macro_precision_ratio", help: "Macro precision over the feedback window.", registers: r }),
    qualityMacroRecall: new Gauge({ name: "categorize_model_macro_recall_ratio", help: "Macro recall over the feedback window.", registers: r }),
    qualityMacroF1: new Gauge({ name: "categorize_model_macro_f1_ratio", help: "Macro F1 over the feedback window.", registers: r }),
    threadBudget: new Gauge({ name: "categorize_thread_budget", help: "Threads the node planned for each kind of work (cores, preprocess_concurrency, vips, uv, ort_intra_op, ort_inter_op, ort_sessions, model_worker).", labelNames: ["kind"], registers: r }),
    qualitySamples: new Gauge({ name: "categorize_model_feedback_samples", help: "Feedback records in the quality window.", registers: r }),
    categoryQuality: new Gauge({
      name: "categorize_category_quality_ratio",
      help: "Quality over the feedback window with top-level categories of the taxonomy in use as classes, by figure (accuracy, macro_precision, macro_recall, macro_f1).",
      labelNames: ["figure"],
      registers: r,
    }),
  };
}
