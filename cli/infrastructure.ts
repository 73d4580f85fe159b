import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Config } from "../common/config.js";
import { createKafkaBus, type KafkaBus } from "../common/kafka.js";
import type { Logger } from "../common/logger.js";
import type { Metrics } from "../common/metrics.js";
import { createFilesystemObjectStore, createS3ObjectStore, type ObjectStore } from "../common/object-store.js";
import type { Closable } from "../common/shutdown.js";

/** The shared adapters of one process: object storage and, when configured, Kafka. */
export interface Infrastructure {
  readonly objects: ObjectStore;
  readonly bus: KafkaBus | undefined;
  readonly closables: readonly Closable[];
}

/**
 * S3 when S3_ENDPOINT is set, else files (DATA_DIR/objects, or a temporary
 * folder removed at shutdown in the in-memory embedded default). Kafka only
 * when KAFKA_BROKERS is set.
 */
export async function openInfrastructure(config: Config, deps: { logger: Logger; metrics: Metrics }): Promise<Infrastructure> {
  const closables: Closable[] = [];
  let objects: ObjectStore;
  const s3 = config.objects.s3;
  if (s3 !== undefined) {
    objects = createS3ObjectStore({ ...s3, bucket: config.objects.bucket, multipartThresholdBytes: config.objects.multipartThresholdBytes, metrics: deps.metrics });
  } else if (config.store.dataDir !== undefined) {
    objects = createFilesystemObjectStore(join(config.store.dataDir, "objects"));
  } else {
    const dir = await mkdtemp(join(tmpdir(), "categorize-objects-"));
    objects = createFilesystemObjectStore(dir);
    closables.push({ name: "temporary object folder", close: () => rm(dir, { recursive: true, force: true }) });
  }
  const bus =
    config.kafka.brokers.length === 0
      ? undefined
      : createKafkaBus({ brokers: config.kafka.brokers, clientId: `${config.kafka.clientId}-${config.role}`, partitions: config.kafka.partitions, replicationFactor: config.kafka.replicationFactor, logger: deps.logger, metrics: deps.metrics, extraTopics: Object.values(config.taxonomy.topics) });
  if (bus !== undefined) closables.push({ name: "kafka", close: () => bus.close() });
  return { objects, bus, closables };
}
