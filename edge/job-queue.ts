import { create, toBinary } from "@bufbuild/protobuf";
import { randomUUID } from "node:crypto";
import { ClassifyJobSchema } from "../gen/categorize/v1/events_pb.js";
import type { InferItem } from "./core-pool.js";
import { TOPICS, type KafkaBus } from "../common/kafka.js";
import { resourceExhausted } from "../common/errors.js";
import type { Logger } from "../common/logger.js";
import { injectTraceContext } from "../common/spans.js";

/** Where ClassifyAsync puts preprocessed images to be classified later. */
export interface JobQueue {
  /** Accepts the job durably; resolves with its id. The active span's W3C context goes with the job. */
  enqueue(item: InferItem): Promise<string>;
}

/**
 * Jobs on Kafka, keyed by sha256 (the same image lands on the same partition).
 * The enqueuing span's traceparent (and tracestate) ride in the message
 * headers, so the core's job consumer continues the trace.
 */
export function createKafkaJobQueue(bus: KafkaBus): JobQueue {
  return {
    async enqueue(item) {
      const jobId = randomUUID();
      const job = create(ClassifyJobSchema, {
        jobId,
        sha256: item.sha256,
        ...(item.tensor === undefined ? {} : { tensor: item.tensor }),
        ...(item.image === undefined ? {} : { image: item.image }),
        requestId: item.requestId,
        tenant: item.tenant,
        enqueuedAtUnixMs: BigInt(Date.now()),
      });
      await bus.send(TOPICS.classifyRequests, [{ key: item.sha256, value: toBinary(ClassifyJobSchema, job), headers: { ...injectTraceContext(), "job-id": jobId } }]);
      return jobId;
    },
  };
}

/**
 * Embedded mode without Kafka: jobs run in this process in the background,
 * through the same core path, a bounded number at a time. Not durable across
 * restarts; production nodes use the Kafka queue.
 */
export function createInProcessJobQueue(run: (item: InferItem) => Promise<unknown>, logger: Logger, limit = 256): JobQueue {
  let pending = 0;
  return {
    enqueue(item) {
      if (pending >= limit) return Promise.reject(resourceExhausted("the in-process job queue is full; retry later"));
      const jobId = randomUUID();
      pending++;
      // The job runs after the enqueuing span ended; it still belongs to that trace.
      run({ ...item, traceContext: injectTraceContext() })
        .catch((err: unknown) => logger.warn({ err: err instanceof Error ? err.message : String(err), jobId }, "async job failed"))
        .finally(() => pending--);
      return Promise.resolve(jobId);
    },
  };
}
