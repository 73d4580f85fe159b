import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import type { Consumer, KafkaMessage } from "kafkajs";
import { tenantOrDefault } from "../common/tenant.js";
import { ClassifyJobSchema, DeadLetterSchema } from "../gen/categorize/v1/events_pb.js";
import { DataType, TensorLayout } from "../gen/categorize/v1/inference_pb.js";
import { CategorizeError, Code, invalidArgument, toCategorizeError } from "../common/errors.js";
import { TOPICS, type KafkaBus } from "../common/kafka.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import { extractTraceContext, inSpan, SpanKind } from "../common/spans.js";
import type { Classifier, WireTensor } from "./classifier.js";

export interface JobConsumer {
  start(): Promise<void>;
  /** Lag per partition of the async group (also exported as a metric). */
  lag(): Promise<{ partition: number; lag: number }[]>;
  close(): Promise<void>;
}

/**
 * The async job worker: a consumer group on classify-requests. Messages of
 * a batch are classified concurrently (so the dynamic batcher fills), and the
 * offset is committed only after their answers are in the database. Retryable
 * failures are retried with backoff a bounded number of times; a poison
 * message (undecodable, invalid tensor) or one that exhausted its retries goes
 * to the dead-letter topic, and only then is its offset committed.
 * Offset reset is "earliest": a new group starts at the oldest retained job,
 * and committed offsets mean nothing is skipped on restart.
 */
export function createJobConsumer(options: {
  bus: KafkaBus;
  groupId: string;
  classifier: Classifier;
  maxAttempts: number;
  concurrency: number;
  logger: Logger;
  metrics: Metrics;
}): JobConsumer {
  const { bus, classifier, logger, metrics } = options;
  // A crash (a broker restart) makes kafkajs disconnect, ask restartOnFailure, then restart on a
  // timer. A close() that lands between its disconnect and that timer cleared nothing, and the
  // restarted consumer then kept a broker connection (and the process) alive after close():
  // once closing, the answer is no, and a restart already decided is stopped again.
  let closing = false;
  let stopping: Promise<void> | undefined;
  const consumer: Consumer = bus.consumer(options.groupId, { restartOnFailure: () => Promise.resolve(!closing) });
  consumer.on(consumer.events.CRASH, (e) => {
    if (closing && e.payload.restart) stopping = new Promise<void>((resolve) => setImmediate(() => void consumer.disconnect().catch(() => undefined).finally(resolve)));
  });
  const admin = bus.admin();
  let lagTimer: NodeJS.Timeout | undefined;

  async function processOne(message: KafkaMessage): Promise<void> {
    if (message.value === null) throw invalidArgument("empty job message");
    const job = (() => {
      try {
        return fromBinary(ClassifyJobSchema, message.value);
      } catch (err) {
        throw invalidArgument(`undecodable job: ${err instanceof Error ? err.message : String(err)}`);
      }
    })();
    const t = job.tensor;
    if (t === undefined) throw invalidArgument("job without tensor");
    const tensor: WireTensor =
      t.dtype === DataType.UINT8 && t.layout === TensorLayout.HWC
        ? { dtype: "uint8", layout: "HWC", shape: t.shape, data: t.data }
        : { dtype: "float32", layout: "CHW", shape: t.shape, data: t.data };
    await classifier.classify({
      sha256: job.sha256,
      tensor,
      image: {
        sha256: job.sha256,
        sizeBytes: Number(job.image?.sizeBytes ?? 0n),
        mime: job.image?.mime ?? "",
        width: job.image?.width ?? 0,
        height: job.image?.height ?? 0,
        objectKey: job.image?.objectKey ?? "",
      },
      topK: 5,
      requestId: job.requestId,
      tenant: tenantOrDefault(job.tenant),
      preprocessMs: 0,
    });
  }

  async function processWithRetry(topic: string, partition: number, message: KafkaMessage): Promise<void> {
    let last: CategorizeError | undefined;
    for (let attempt = 1; attempt <= options.maxAttempts; attempt++) {
      try {
        // Continues the trace of the ClassifyAsync that enqueued the job (traceparent in the message headers).
        await inSpan(
          "core.classify",
          { kind: SpanKind.CONSUMER, parent: extractTraceContext(message.headers), attributes: { sha256: message.key?.toString() ?? "", job_id: message.headers?.["job-id"]?.toString() ?? "", attempt, "messaging.kafka.offset": message.offset } },
          () => processOne(message),
        );
        metrics.jobsProcessed.inc({ result: "ok" });
        return;
      } catch (err) {
        last = toCategorizeError(err);
        if (!last.retryable) break;
        await new Promise((r) => setTimeout(r, 100 * 2 ** attempt));
      }
    }
    const reason = last?.code === Code.InvalidArgument ? "invalid" : "retries_exhausted";
    logger.warn({ topic, partition, offset: message.offset, reason, err: last?.message }, "job sent to the dead-letter topic");
    await bus.send(TOPICS.deadLetter, [
      {
        key: message.key?.toString() ?? "",
        value: toBinary(
          DeadLetterSchema,
          create(DeadLetterSchema, {
            sourceTopic: topic,
            partition,
            offset: BigInt(message.offset),
            key: message.key?.toString() ?? "",
            payload: message.value ?? new Uint8Array(),
            reason: `${reason}: ${last?.message ?? ""}`,
            attempts: options.maxAttempts,
            failedAtUnixMs: BigInt(Date.now()),
          }),
        ),
      },
    ]);
    metrics.deadLetters.inc({ reason });
    metrics.jobsProcessed.inc({ result: "dead_letter" });
  }

  async function lag(): Promise<{ partition: number; lag: number }[]> {
    const [ends, committed] = await Promise.all([admin.fetchTopicOffsets(TOPICS.classifyRequests), admin.fetchOffsets({ groupId: options.groupId, topics: [TOPICS.classifyRequests] })]);
    const done = new Map((committed[0]?.partitions ?? []).map((p) => [p.partition, Number(p.offset)]));
    return ends.map((e) => {
      const c = done.get(e.partition) ?? -1;
      const end = Number(e.high);
      const low = Number(e.low);
      return { partition: e.partition, lag: Math.max(0, end - (c >= 0 ? c : low)) };
    });
  }

  return {
    async start() {
      await admin.connect();
      await consumer.connect();
      await consumer.subscribe({ topic: TOPICS.classifyRequests, fromBeginning: true });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 2,
        eachBatch: async (payload) => {
          const { batch } = payload;
          const messages = batch.messages;
          for (let i = 0; i < messages.length && payload.isRunning() && !payload.isStale(); i += options.concurrency) {
            const chunk = messages.slice(i, i + options.concurrency);
            await Promise.all(chunk.map((m) => processWithRetry(batch.topic, batch.partition, m)));
            const last = chunk[chunk.length - 1]!;
            payload.resolveOffset(last.offset);
            await consumer.commitOffsets([{ topic: batch.topic, partition: batch.partition, offset: String(BigInt(last.offset) + 1n) }]);
            await payload.heartbeat();
          }
        },
      });
      const updateLag = () => {
        lag().then(
          (parts) => parts.forEach((p) => metrics.consumerLag.set({ topic: TOPICS.classifyRequests, partition: String(p.partition) }, p.lag)),
          () => undefined,
        );
      };
      lagTimer = setInterval(updateLag, 5_000);
      lagTimer.unref();
    },
    lag,
    async close() {
      closing = true;
      if (lagTimer !== undefined) clearInterval(lagTimer);
      await consumer.disconnect().catch(() => undefined);
      await stopping;
      await admin.disconnect().catch(() => undefined);
    },
  };
}
