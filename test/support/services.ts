import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { promisify } from "node:util";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import pg from "pg";
import { TOPICS, createKafkaBus } from "../../common/kafka.js";
import { createLogger } from "../../common/logger.js";
import { createS3ObjectStore, type ObjectStore } from "../../common/object-store.js";
import { repoRoot } from "./nodes.js";
import { testKafka } from "./test-kafka.js";

const run = promisify(execFile);

/** The real services of the integration tier, or why they are missing. */
export function dataServices(): { env: Record<string, string>; skip: false } | { skip: string } {
  const { DATABASE_URL, KAFKA_BROKERS, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY } = process.env;
  if (DATABASE_URL === undefined || KAFKA_BROKERS === undefined || S3_ENDPOINT === undefined || S3_ACCESS_KEY === undefined || S3_SECRET_KEY === undefined) {
    if (process.env.CI !== undefined) throw new Error("integration tests need DATABASE_URL, KAFKA_BROKERS and S3_* (npm test starts them)");
    return { skip: "DATABASE_URL, KAFKA_BROKERS and S3_ENDPOINT are not set (run through npm test)" };
  }
  return { env: { DATABASE_URL, KAFKA_BROKERS, S3_ENDPOINT, S3_ACCESS_KEY, S3_SECRET_KEY }, skip: false };
}

/**
 * An isolated slice of the shared services for one test: a fresh Postgres
 * schema (via search_path), a fresh bucket and a fresh consumer group.
 */
export async function isolatedEnv(base: Record<string, string>, name: string): Promise<Record<string, string>> {
  const id = `${name}_${randomBytes(4).toString("hex")}`;
  const client = new pg.Client({ connectionString: base.DATABASE_URL });
  await client.connect();
  await client.query(`CREATE SCHEMA "${id}"`);
  await client.end();
  const url = new URL(base.DATABASE_URL!);
  url.searchParams.set("options", `-c search_path=${id}`);
  const group = `categorize-test-${id}`;
  if (base.KAFKA_BROKERS !== undefined) await startGroupAtTopicEnd(base.KAFKA_BROKERS, group, TOPICS.classifyRequests);
  return {
    ...base,
    DATABASE_URL: url.toString(),
    S3_BUCKET: id.replace(/_/g, "-").toLowerCase(),
    KAFKA_CONSUMER_GROUP: group,
    KAFKA_TOPIC_PARTITIONS: "3",
  };
}

/**
 * Commits a new consumer group's offsets at the topic's current end. A new group
 * reads a job topic from its start (right for a first deployment); on a broker
 * whose data outlived earlier runs, that start holds hundreds of other tests'
 * jobs, each retried to the dead-letter topic (their originals are in other
 * buckets) before this test's job is reached. A topic not created yet has nothing to skip.
 */
async function startGroupAtTopicEnd(brokers: string, groupId: string, topic: string): Promise<void> {
  const client = testKafka(brokers, `test-offsets-${groupId}`);
  const admin = client.kafka.admin();
  try {
    await admin.connect();
    if (!(await admin.listTopics()).includes(topic)) return;
    const ends = await admin.fetchTopicOffsets(topic);
    await admin.setOffsets({ groupId, topic, partitions: ends.map((p) => ({ partition: p.partition, offset: p.high })) });
  } finally {
    await admin.disconnect().catch(() => undefined);
    client.closeSockets();
  }
}

/** Runs SQL against the schema a test env points at. */
export async function sql<R extends object>(env: Record<string, string>, text: string, params: unknown[] = []): Promise<R[]> {
  const client = new pg.Client({ connectionString: env.DATABASE_URL });
  await client.connect();
  try {
    return (await client.query(text, params)).rows as R[];
  } finally {
    await client.end();
  }
}

/** The S3 object store a test env points at (its bucket unless another is named). */
export function s3Store(env: Record<string, string>, bucket = env.S3_BUCKET!): ObjectStore {
  return createS3ObjectStore({
    endpoint: env.S3_ENDPOINT!,
    accessKey: env.S3_ACCESS_KEY!,
    secretKey: env.S3_SECRET_KEY!,
    region: "us-east-1",
    bucket,
    multipartThresholdBytes: 8 << 20,
  });
}

/** infra/local/services.sh with the given arguments (stop, start and restart real services). */
export async function services(...args: string[]): Promise<void> {
  await run(join(repoRoot, "infra", "local", "services.sh"), args, { timeout: 180_000 });
}

/** Whether the test run may stop and start the local services (not when they were given from outside). */
export function mayRestartServices(): boolean {
  return process.env.CATEGORIZE_TEST_SERVICES !== "external";
}

/**
 * Reads every message of a topic from the current end on, decoding the values.
 * The topics are created first, as a node creates them (same partitions and
 * retention): a reader may start before any node on a fresh broker.
 */
export async function topicReader<D extends DescMessage>(brokers: string, topic: string, schema: D) {
  const bus = createKafkaBus({
    brokers: brokers.split(","),
    clientId: "categorize-test-reader",
    partitions: 6,
    replicationFactor: 1,
    logger: createLogger({ level: "silent", service: "test", nodeId: "test" }),
  });
  try {
    await bus.ensureTopics(AbortSignal.timeout(30_000));
  } finally {
    await bus.close();
  }
  const { kafka, closeSockets } = testKafka(brokers, "categorize-test-reader");
  const consumer = kafka.consumer({ groupId: `reader-${randomBytes(6).toString("hex")}` });
  const seen: { key: string; value: MessageShape<D>; headers: Record<string, string> }[] = [];
  try {
    const admin = kafka.admin();
    await admin.connect();
    let start: Awaited<ReturnType<typeof admin.fetchTopicOffsets>>;
    try {
      // Just after creation a partition's leader may not be serving yet (NOT_LEADER_FOR_PARTITION, retriable).
      for (let attempt = 1; ; attempt++) {
        try {
          start = await admin.fetchTopicOffsets(topic);
          break;
        } catch (err) {
          if ((err as { retriable?: boolean }).retriable !== true || attempt >= 50) throw err;
          await new Promise((r) => setTimeout(r, 200));
        }
      }
    } finally {
      await admin.disconnect();
    }
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const startAt = new Map(start.map((p) => [p.partition, BigInt(p.offset)]));
    await consumer.run({
      eachMessage: ({ partition, message }) => {
        if (BigInt(message.offset) >= (startAt.get(partition) ?? 0n) && message.value !== null) {
          const headers: Record<string, string> = {};
          for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
          seen.push({ key: message.key?.toString() ?? "", value: fromBinary(schema, message.value), headers });
        }
        return Promise.resolve();
      },
    });
  } catch (err) {
    // A reader that failed to start must not keep connections open either.
    await consumer.disconnect().catch(() => undefined);
    closeSockets();
    throw err;
  }
  return {
    messages: () => seen,
    async waitFor(predicate: (all: typeof seen) => boolean, timeoutMs = 30_000): Promise<typeof seen> {
      const deadline = Date.now() + timeoutMs;
      while (!predicate(seen)) {
        if (Date.now() > deadline) throw new Error(`timed out waiting on ${topic}; have ${seen.length} messages`);
        await new Promise((r) => setTimeout(r, 100));
      }
      return seen;
    },
    /** Disconnects the consumer, then ends any connection kafkajs opened through the disconnect. */
    async close(): Promise<void> {
      try {
        await consumer.disconnect();
      } finally {
        closeSockets();
      }
    },
  };
}

export async function waitUntil(what: string, fn: () => Promise<boolean> | boolean, timeoutMs = 30_000): Promise<number> {
  const started = Date.now();
  while (!(await fn())) {
    if (Date.now() - started > timeoutMs) throw new Error(`timed out waiting until ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return Date.now() - started;
}
