import { CompressionTypes, Kafka, logLevel, type Admin, type Consumer, type IHeaders, type Producer } from "kafkajs";
import { unavailable } from "./errors.js";
import { closableSocketFactory } from "./kafka-sockets.js";
import type { Logger } from "./logger.js";
import type { Metrics } from "./metrics.js";

/** Topic names carry their schema version; a breaking change gets a new topic. */
export const TOPICS = {
  imageClassified: "categorize.image-classified.v1",
  classifyRequests: "categorize.classify-requests.v1",
  deadLetter: "categorize.dead-letter.v1",
  imageDeleted: "categorize.image-deleted.v1",
} as const;

const DAY_MS = 86_400_000;
/** Upper bound of one send, retries included (kafkajs: 5 retries of at most 10 s requests with backoff). */
const SEND_TIMEOUT_MS = 60_000;
/**
 * How long each topic keeps messages when this node creates it (the same as
 * infra/k8s/operators/strimzi-topics.yaml). A job older than its topic's
 * retention is gone, so the orphan sweep's grace (ORPHAN_GRACE_MS, default
 * 4 days) stays above the job topic's 3 days: a waiting job's original is kept.
 */
export const TOPIC_RETENTION_MS: Readonly<Record<string, number>> = {
  [TOPICS.imageClassified]: 7 * DAY_MS,
  [TOPICS.classifyRequests]: 3 * DAY_MS,
  [TOPICS.deadLetter]: 14 * DAY_MS,
  [TOPICS.imageDeleted]: 7 * DAY_MS,
};

export interface KafkaMessage {
  readonly key: string;
  readonly value: Uint8Array;
  readonly headers?: Readonly<Record<string, string>>;
}

/** The Kafka port: topic setup, an idempotent producer, consumers, broker reachability. */
export interface KafkaBus {
  /** Waits until the broker answers metadata and every topic exists (creating them), or the signal aborts. */
  ensureTopics(signal: AbortSignal): Promise<void>;
  /** Sends and waits for acknowledgement by all in-sync replicas. */
  send(topic: string, messages: readonly KafkaMessage[]): Promise<void>;
  /** A consumer; `restartOnFailure` decides whether kafkajs restarts it after a crash (default: always). */
  consumer(groupId: string, options?: { restartOnFailure?: (err: Error) => Promise<boolean> }): Consumer;
  admin(): Admin;
  /** Broker metadata round trip, for readiness. */
  ping(): Promise<void>;
  close(): Promise<void>;
}

export function createKafkaBus(options: {
  brokers: readonly string[];
  clientId: string;
  partitions: number;
  replicationFactor: number;
  logger: Logger;
  metrics?: Metrics;
  /** More topics to create at start (per-category event topics), kept as long as the events topic. */
  extraTopics?: readonly string[];
}): KafkaBus {
  const wanted = [...new Set([...Object.values(TOPICS), ...(options.extraTopics ?? [])])];
  const log = options.logger.child({ component: "kafka" });
  const { socketFactory, closeSockets } = closableSocketFactory();
  const kafka = new Kafka({
    socketFactory,
    clientId: options.clientId,
    brokers: [...options.brokers],
    connectionTimeout: 3_000,
    requestTimeout: 10_000,
    retry: { initialRetryTime: 100, maxRetryTime: 2_000, retries: 5 },
    logLevel: logLevel.WARN,
    logCreator: () => (entry) => {
      const { message, ...rest } = entry.log;
      if (entry.level <= logLevel.ERROR) log.error(rest, message);
      else log.warn(rest, message);
    },
  });
  // Idempotence needs acks from all in-sync replicas and one request in flight per connection.
  // A producer whose send failed is replaced, not retried: after a broker restart a request that
  // timed out here may have been written there, and kafkajs keeps the idempotent producer's
  // sequence numbers, so every later send fails with OUT_OF_ORDER_SEQUENCE_NUMBER for good
  // (kafkajs#598). A new producer gets a new producer id; the caller re-sends (at least once,
  // with the same key and event id).
  const newProducer = () => kafka.producer({ idempotent: true, maxInFlightRequests: 1, allowAutoTopicCreation: false });
  let producer: Producer = newProducer();
  let producerConnected: Promise<void> | undefined;
  const connectProducer = () => {
    const p = producer;
    producerConnected ??= p.connect().catch((err: unknown) => {
      if (producer === p) producerConnected = undefined;
      throw err;
    });
    return producerConnected;
  };
  const watchDisconnect = (p: Producer) =>
    p.on(p.events.DISCONNECT, () => {
      if (producer === p) producerConnected = undefined;
    });
  watchDisconnect(producer);
  const retiringProducers = new Set<Promise<void>>();
  let closed = false;
  const replaceProducer = (failed: Producer) => {
    if (producer !== failed || closed) return;
    producer = newProducer();
    watchDisconnect(producer);
    producerConnected = undefined;
    const done: Promise<void> = failed
      .disconnect()
      .catch(() => undefined)
      .finally(() => retiringProducers.delete(done));
    retiringProducers.add(done);
  };
  // One shared admin; callers that come while it connects wait for the same connect. An admin given up
  // on is disconnected only once its connect settled: kafkajs completes a connect that a disconnect
  // overtook, and that client's connections then stay open (and keep the process alive) for good.
  let admin: Promise<Admin> | undefined;
  const retiring = new Set<Promise<void>>();
  const getAdmin = (): Promise<Admin> => {
    if (closed) return Promise.reject(new Error("kafka bus is closed"));
    admin ??= (async () => {
      const a = kafka.admin();
      try {
        await a.connect();
        return a;
      } catch (err) {
        await a.disconnect().catch(() => undefined);
        throw err;
      }
    })();
    return admin;
  };
  /** Gives up on this admin (unless another caller already did) and disconnects it. */
  const dropAdmin = (which: Promise<Admin> | undefined): Promise<void> => {
    if (which === undefined || admin !== which) return Promise.resolve();
    admin = undefined;
    const done: Promise<void> = which
      .then((a) => a.disconnect(), () => undefined)
      .catch(() => undefined)
      .finally(() => retiring.delete(done));
    retiring.add(done);
    return done;
  };

  return {
    async ensureTopics(signal) {
      for (let delay = 200; ; delay = Math.min(delay * 2, 2_000)) {
        const current = getAdmin();
        try {
          const a = await current;
          await a.describeCluster();
          const existing = new Set(await a.listTopics());
          const missing = wanted.filter((t) => !existing.has(t));
          if (missing.length > 0) {
            await a.createTopics({
              waitForLeaders: true,
              topics: missing.map((topic) => ({
                topic,
                numPartitions: options.partitions,
                replicationFactor: options.replicationFactor,
                configEntries: [{ name: "retention.ms", value: String(TOPIC_RETENTION_MS[topic] ?? TOPIC_RETENTION_MS[TOPICS.imageClassified]) }],
              })),
            });
            log.info({ topics: missing }, "topics created");
          }
          // Leaders elected for every partition: the broker is really ready.
          const meta = await a.fetchTopicMetadata({ topics: wanted });
          if (meta.topics.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0))) {
            options.metrics?.kafkaUp.set(1);
            return;
          }
        } catch (err) {
          options.metrics?.kafkaUp.set(0);
          log.warn({ err: err instanceof Error ? err.message : String(err) }, "kafka not ready yet");
          await dropAdmin(current);
        }
        if (signal.aborted) throw unavailable("kafka did not become ready in time");
        await new Promise((r) => setTimeout(r, delay));
      }
    },
    async send(topic, messages) {
      const started = performance.now();
      const p = producer;
      let timer: NodeJS.Timeout | undefined;
      try {
        await connectProducer();
        // kafkajs bounds each request (requestTimeout, retries); this bounds the whole send, so a
        // producer wedged by a broker restart is replaced instead of holding its caller for good.
        const timedOut = new Promise<never>((_, reject) => {
          timer = setTimeout(() => reject(new Error(`no acknowledgement in ${SEND_TIMEOUT_MS} ms`)), SEND_TIMEOUT_MS);
        });
        await Promise.race([
          p.send({
            topic,
            acks: -1,
            compression: CompressionTypes.GZIP,
            messages: messages.map((m) => ({ key: m.key, value: Buffer.from(m.value.buffer, m.value.byteOffset, m.value.byteLength), headers: (m.headers ?? {}) as IHeaders })),
          }),
          timedOut,
        ]);
        options.metrics?.kafkaSendDuration.observe({ topic }, (performance.now() - started) / 1000);
      } catch (err) {
        options.metrics?.kafkaSendErrors.inc({ topic });
        replaceProducer(p);
        throw unavailable(`kafka send to ${topic} failed: ${err instanceof Error ? err.message : String(err)}`, err);
      } finally {
        clearTimeout(timer);
      }
    },
    consumer: (groupId, opts) =>
      kafka.consumer({
        groupId,
        sessionTimeout: 15_000,
        heartbeatInterval: 3_000,
        allowAutoTopicCreation: false,
        retry: { retries: 10, initialRetryTime: 200, maxRetryTime: 5_000, ...(opts?.restartOnFailure === undefined ? {} : { restartOnFailure: opts.restartOnFailure }) },
      }),
    admin: () => kafka.admin(),
    async ping() {
      const current = getAdmin();
      try {
        const a = await current;
        await a.describeCluster();
        options.metrics?.kafkaUp.set(1);
      } catch (err) {
        options.metrics?.kafkaUp.set(0);
        await dropAdmin(current);
        throw err;
      }
    },
    async close() {
      closed = true;
      await producer.disconnect().catch(() => undefined);
      await Promise.all(retiringProducers);
      await dropAdmin(admin);
      await Promise.all(retiring);
      // What kafkajs connected after its clients disconnected is ended here.
      closeSockets();
    },
  };
}
