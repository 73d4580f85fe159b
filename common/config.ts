import { readFileSync } from "node:fs";
import { z } from "zod";
import { parseApiKeys, type AccessConfig } from "./server/access-control.js";

/**
 * The only place that reads the environment. Everything else receives the
 * typed, frozen {@link Config} object, so a module's inputs are visible in
 * its factory signature and tests can build configs without touching
 * process.env.
 */

const MiB = 1024 * 1024;

const int = (def: number, min = 0, max = Number.MAX_SAFE_INTEGER) =>
  z.coerce.number().int().min(min).max(max).default(def);
const optionalString = z
  .string()
  .trim()
  .optional()
  .transform((v) => (v === undefined || v === "" ? undefined : v));
const bool = (def: boolean) =>
  z
    .enum(["true", "false", "1", "0", "yes", "no", ""])
    .optional()
    .transform((v) => (v === undefined || v === "" ? def : v === "true" || v === "1" || v === "yes"));
const csv = z
  .string()
  .optional()
  .transform((v) =>
    (v ?? "")
      .split(",")
      .map((s) => s.trim())
      .filter((s) => s.length > 0),
  );

const envSchema = z.object({
  HOST: z.string().default("127.0.0.1"),
  PORT: int(8080, 0, 65535),
  /** Operations port (/healthz, /readyz, /metrics; plain HTTP, no credentials): off when unset. */
  ADMIN_PORT: optionalString,
  ADMIN_HOST: optionalString,
  NODE_ID: optionalString,
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),

  TLS_CERT_FILE: optionalString,
  TLS_KEY_FILE: optionalString,
  /** CA bundle used to verify client certificates (mTLS) on this node's port. */
  TLS_CLIENT_CA_FILE: optionalString,

  CATEGORIZE_MODEL: optionalString,
  CATEGORIZE_MODEL_CACHE_DIR: z.string().default(".cache/models"),
  /** Operator's taxonomy (JSON); unset: the default taxonomy shipped for the ImageNet models. */
  CATEGORIZE_TAXONOMY: optionalString,
  /** Categories scoring below this are left out of answers (an "unknown" answer when none reaches it). */
  CATEGORIZE_CATEGORY_MIN_SCORE: z.coerce.number().min(0).max(1).default(0.1),
  /** category path=topic,...: ImageClassified events of that top category are also published there. */
  CATEGORIZE_CATEGORY_TOPICS: csv,
  HF_ENDPOINT: z.string().url().default("https://huggingface.co"),
  HF_TOKEN: optionalString,
  ORT_INTRA_OP_THREADS: int(0, 0, 256),
  ORT_INTER_OP_THREADS: int(1, 0, 256),
  /** Runs the onnxruntime session on a worker thread, off the event loop (a batch of 8 blocked it ~30 ms). */
  ORT_WORKER_THREAD: bool(true),
  /** Model sessions (each its own worker thread); 0 = auto: cores / intra-op threads. */
  ORT_SESSIONS: int(0, 0, 64),
  /** Exact int8 sums on x86-64 without VNNI (onnxruntime session.x64quantprecision): auto = on where the CPU needs it. */
  ORT_X64_QUANT_PRECISION: z.enum(["auto", "on", "off"]).default("auto"),
  /**
   * 4, not 8: a batch of 8 costs the same per image as one of 4 (2.05 vs 2.06 ms on 2 intra-op
   * threads) but grows onnxruntime's arena by 26 MB more (RSS 163 vs 137 MB after runs up to the size).
   */
  BATCH_MAX_SIZE: int(4, 1, 256),
  BATCH_MAX_DELAY_MS: z.coerce.number().min(0).max(1000).default(2),
  /** An idle model runs what is queued at once; BATCH_MAX_DELAY_MS then only holds items while a batch runs. */
  BATCH_DISPATCH_WHEN_IDLE: bool(true),
  BATCH_QUEUE_LIMIT: int(256, 1, 1_000_000),
  CORE_STREAM_MAX_IN_FLIGHT: int(64, 1, 100_000),

  CORE_URLS: csv,
  CORE_TLS_CA_FILE: optionalString,
  CORE_TLS_CERT_FILE: optionalString,
  CORE_TLS_KEY_FILE: optionalString,
  CORE_RETRY_ATTEMPTS: int(2, 0, 10),
  MAX_IMAGE_BYTES: int(20 * MiB, 1, 1024 * MiB),
  MAX_IMAGE_PIXELS: int(64_000_000, 1, 1_000_000_000),
  MAX_IMAGE_DIMENSION: int(16_384, 1, 1_000_000),
  DECODE_TIMEOUT_MS: int(5_000, 100, 600_000),
  PREPROCESS_CONCURRENCY: int(0, 0, 256),
  /** libvips threads per image (0 = auto: 1, images run side by side instead). */
  VIPS_THREADS: int(0, 0, 256),
  /** Read by libuv itself when its pool starts; here only so the thread budget reports it. */
  UV_THREADPOOL_SIZE: int(4, 1, 1024),
  CACHE_MAX_ENTRIES: int(10_000, 0, 10_000_000),
  /**
   * Lifetime of an edge cache entry: a DeleteImage on another edge is seen here within it (the
   * edge that serves the delete drops its entry at once).
   */
  CACHE_TTL_MS: int(60_000, 1_000, 86_400_000),
  STREAM_WINDOW: int(16, 1, 10_000),
  IN_PROCESS_CORE: bool(true),
  REQUEST_TIMEOUT_MS: int(30_000, 10, 3_600_000),

  DATABASE_URL: optionalString,
  DATA_DIR: optionalString,
  DB_POOL_MAX: int(10, 1, 1000),
  DB_STATEMENT_TIMEOUT_MS: int(5_000, 10, 600_000),
  /** Store of a node without DATABASE_URL and DATA_DIR: auto = memory unless Kafka or S3 is configured, then PGlite in memory. */
  EMBEDDED_STORE: z.enum(["auto", "memory", "pglite"]).default("auto"),
  MEMORY_STORE_MAX_IMAGES: int(20_000, 1, 10_000_000),

  S3_ENDPOINT: optionalString,
  S3_ACCESS_KEY: optionalString,
  S3_SECRET_KEY: optionalString,
  S3_BUCKET: z.string().regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, "not a valid bucket name").default("categorize"),
  S3_REGION: z.string().default("us-east-1"),
  S3_MULTIPART_THRESHOLD_BYTES: int(8 * MiB, 5 * MiB, 5 * 1024 * MiB),
  RETENTION_DAYS: z.coerce.number().min(0).max(36_500).default(30),
  RETENTION_INTERVAL_MS: int(3_600_000, 100, 86_400_000),
  RETENTION_BATCH: int(500, 1, 100_000),
  /**
   * An original with no image row is removed once it is older than this (uploads for refused or failed
   * requests). Above the job topic's 3-day retention: an async job waiting in Kafka has no row yet.
   */
  ORPHAN_GRACE_MS: int(4 * 86_400_000, 0, 30 * 86_400_000),

  KAFKA_BROKERS: csv,
  KAFKA_CLIENT_ID: z.string().default("categorize"),
  KAFKA_TOPIC_PARTITIONS: int(6, 1, 10_000),
  KAFKA_REPLICATION_FACTOR: int(1, 1, 100),
  KAFKA_CONSUMER_GROUP: z.string().default("categorize-core-async"),
  KAFKA_JOB_MAX_ATTEMPTS: int(3, 1, 100),
  OUTBOX_POLL_MS: int(200, 10, 60_000),
  OUTBOX_BATCH: int(200, 1, 10_000),
  ASYNC_CONSUMER: bool(true),

  QUALITY_WINDOW_HOURS: int(168, 1, 24 * 366),

  API_KEYS: optionalString,
  API_KEYS_FILE: optionalString,
  JWT_KEY_FILE: optionalString,
  JWT_ISSUER: optionalString,
  JWT_AUDIENCE: optionalString,
  /** The JWT claim naming the caller's tenant. */
  JWT_TENANT_CLAIM: z.string().regex(/^[A-Za-z0-9_.:/-]{1,100}$/, "not a claim name").default("tenant"),
  /** Explicitly run without access control on a non-loopback address (behind a trusted gateway only). */
  AUTH_DISABLED: bool(false),
  CORE_SHARED_SECRET: optionalString,
  CORE_SHARED_SECRET_FILE: optionalString,
  RATE_LIMIT_RPS: z.coerce.number().positive().max(1_000_000).default(500),
  RATE_LIMIT_BURST: int(1_000, 1, 1_000_000),
  RATE_LIMIT_CONCURRENCY: int(128, 1, 100_000),
  CORS_ORIGINS: csv,

  SHUTDOWN_GRACE_MS: int(10_000, 0, 600_000),
  READINESS_INTERVAL_MS: int(1_000, 50, 60_000),
  SERVE_PAGE: bool(true),

  // OpenTelemetry: only what decides whether tracing is on. The exporter and
  // the SDK read the rest of the standard OTEL_* variables themselves.
  OTEL_SDK_DISABLED: bool(false),
  OTEL_TRACES_EXPORTER: optionalString,
  OTEL_EXPORTER_OTLP_ENDPOINT: optionalString,
  OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: optionalString,
  OTEL_EXPORTER_OTLP_PROTOCOL: optionalString,
  OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: optionalString,
});

/** Which parts of the system this process runs. */
export type NodeRole = "edge" | "core" | "all";

type Env = z.infer<typeof envSchema>;

/** Typed, frozen configuration of one node. */
export interface Config {
  readonly role: NodeRole;
  readonly nodeId: string;
  readonly logLevel: Env["LOG_LEVEL"];
  readonly server: {
    readonly host: string;
    readonly port: number;
    readonly tls: TlsFiles | undefined;
    readonly clientCaFile: string | undefined;
    readonly servePage: boolean;
    /** Separate operations listener; when set, the public port serves no /readyz or /metrics (only /healthz). */
    readonly admin: { readonly host: string; readonly port: number } | undefined;
  };
  readonly model: {
    readonly ref: string | undefined;
    readonly cacheDir: string;
    readonly hubEndpoint: string;
    readonly hubToken: string | undefined;
    readonly intraOpThreads: number;
    readonly interOpThreads: number;
    readonly inWorker: boolean;
    /** 0 = auto (see common/thread-budget.ts). */
    readonly sessions: number;
    readonly x64QuantPrecision: "auto" | "on" | "off";
  };
  readonly taxonomy: {
    /** JSON taxonomy file; undefined = the default one. */
    readonly file: string | undefined;
    readonly minScore: number;
    /** Category path -> extra topic for its ImageClassified events (the most specific mapped path of the top category wins). */
    readonly topics: Readonly<Record<string, string>>;
  };
  readonly batching: {
    readonly maxBatchSize: number;
    readonly maxDelayMs: number;
    readonly dispatchWhenIdle: boolean;
    readonly queueLimit: number;
    readonly streamMaxInFlight: number;
  };
  readonly edge: {
    readonly coreUrls: readonly string[];
    readonly coreTls: (Partial<TlsFiles> & { readonly caFile: string }) | undefined;
    readonly retryAttempts: number;
    readonly maxImageBytes: number;
    readonly maxImagePixels: number;
    readonly maxImageDimension: number;
    readonly decodeTimeoutMs: number;
    readonly preprocessConcurrency: number;
    readonly vipsThreads: number;
    readonly uvThreads: number;
    readonly cacheMaxEntries: number;
    /** Lifetime of an edge cache entry (ms). */
    readonly cacheTtlMs: number;
    readonly streamWindow: number;
    /** The embedded node's edge calls its core in process rather than over its own port. */
    readonly inProcessCore: boolean;
    readonly requestTimeoutMs: number;
  };
  readonly store: {
    readonly databaseUrl: string | undefined;
    readonly dataDir: string | undefined;
    readonly poolMax: number;
    readonly statementTimeoutMs: number;
    /**
     * postgres (DATABASE_URL), pglite (DATA_DIR, durable; or in memory when Kafka or S3 needs an outbox
     * or rows beside shared objects), or memory (nothing durable asked for: answers held in process, no originals kept).
     */
    readonly kind: "postgres" | "pglite" | "memory";
    readonly memoryMaxImages: number;
  };
  readonly objects: {
    readonly s3: { readonly endpoint: string; readonly accessKey: string; readonly secretKey: string; readonly region: string } | undefined;
    readonly bucket: string;
    readonly multipartThresholdBytes: number;
    readonly retentionDays: number;
    readonly retentionIntervalMs: number;
    readonly retentionBatch: number;
    readonly orphanGraceMs: number;
  };
  readonly kafka: {
    readonly brokers: readonly string[];
    readonly clientId: string;
    readonly partitions: number;
    readonly replicationFactor: number;
    readonly consumerGroup: string;
    readonly jobMaxAttempts: number;
    readonly outboxPollMs: number;
    readonly outboxBatch: number;
    readonly asyncConsumer: boolean;
  };
  readonly tracing: {
    /** Spans are exported over OTLP (http/protobuf); off unless an OTEL_* variable asks for it. */
    readonly enabled: boolean;
  };
  readonly qualityWindowHours: number;
  readonly access: AccessConfig;
  readonly shutdownGraceMs: number;
  readonly readinessIntervalMs: number;
}

export interface TlsFiles {
  readonly certFile: string;
  readonly keyFile: string;
}

/** Thrown when configuration is invalid; names every bad key at once. */
export class ConfigError extends Error {
  constructor(readonly issues: readonly string[]) {
    super(`invalid configuration:\n  ${issues.join("\n  ")}`);
    this.name = "ConfigError";
  }
}

/**
 * Parses the environment once into a frozen {@link Config}.
 * @throws ConfigError naming every invalid key.
 */
export function loadConfig(role: NodeRole, env: Readonly<Record<string, string | undefined>>): Config {
  const parsed = envSchema.safeParse(env);
  if (!parsed.success) {
    throw new ConfigError(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`));
  }
  const e = parsed.data;
  const issues: string[] = [];
  const pair = (certKey: string, cert: string | undefined, keyKey: string, key: string | undefined) => {
    if ((cert === undefined) !== (key === undefined)) issues.push(`${certKey}/${keyKey}: set both or neither`);
    return cert !== undefined && key !== undefined ? { certFile: cert, keyFile: key } : undefined;
  };
  const categoryTopics: Record<string, string> = {};
  for (const entry of e.CATEGORIZE_CATEGORY_TOPICS) {
    const at = entry.lastIndexOf("=");
    const path = at < 0 ? "" : entry.slice(0, at).trim();
    const topic = at < 0 ? "" : entry.slice(at + 1).trim();
    if (path === "" || !/^[a-zA-Z0-9._-]{1,249}$/.test(topic)) issues.push(`CATEGORIZE_CATEGORY_TOPICS: '${entry}' is not 'category/path=topic' (topic: letters, digits, . _ -)`);
    else if (categoryTopics[path] !== undefined) issues.push(`CATEGORIZE_CATEGORY_TOPICS: '${path}' is mapped twice`);
    else categoryTopics[path] = topic;
  }
  if (e.CATEGORIZE_CATEGORY_TOPICS.length > 0 && e.KAFKA_BROKERS.length === 0) issues.push("CATEGORIZE_CATEGORY_TOPICS: needs KAFKA_BROKERS");
  const tls = pair("TLS_CERT_FILE", e.TLS_CERT_FILE, "TLS_KEY_FILE", e.TLS_KEY_FILE);
  const coreClientCert = pair("CORE_TLS_CERT_FILE", e.CORE_TLS_CERT_FILE, "CORE_TLS_KEY_FILE", e.CORE_TLS_KEY_FILE);
  if (e.TLS_CLIENT_CA_FILE !== undefined && tls === undefined) issues.push("TLS_CLIENT_CA_FILE: needs TLS_CERT_FILE and TLS_KEY_FILE");
  if (coreClientCert !== undefined && e.CORE_TLS_CA_FILE === undefined) issues.push("CORE_TLS_CERT_FILE: needs CORE_TLS_CA_FILE");
  const needsSql = e.KAFKA_BROKERS.length > 0 || e.S3_ENDPOINT !== undefined;
  const storeKind: Config["store"]["kind"] =
    e.DATABASE_URL !== undefined ? "postgres" : e.DATA_DIR !== undefined || e.EMBEDDED_STORE === "pglite" || (e.EMBEDDED_STORE === "auto" && needsSql) ? "pglite" : "memory";
  if (e.EMBEDDED_STORE === "memory" && (e.DATABASE_URL !== undefined || e.DATA_DIR !== undefined || needsSql)) {
    issues.push("EMBEDDED_STORE: memory holds no outbox and no durable rows; leave it unset with DATABASE_URL, DATA_DIR, KAFKA_BROKERS or S3_ENDPOINT");
  }
  if (role === "edge" && e.CORE_URLS.length === 0) issues.push("CORE_URLS: an edge needs at least one core URL");
  for (const url of e.CORE_URLS) {
    if (!/^https?:\/\/[^/]+$/.test(url)) issues.push(`CORE_URLS: '${url}' is not http(s)://host:port`);
  }
  if (e.S3_ENDPOINT !== undefined) {
    if (!/^https?:\/\/[^/]+\/?$/.test(e.S3_ENDPOINT)) issues.push(`S3_ENDPOINT: '${e.S3_ENDPOINT}' is not http(s)://host:port`);
    if (e.S3_ACCESS_KEY === undefined) issues.push("S3_ACCESS_KEY: required with S3_ENDPOINT");
    if (e.S3_SECRET_KEY === undefined) issues.push("S3_SECRET_KEY: required with S3_ENDPOINT");
  }
  let admin: Config["server"]["admin"];
  if (e.ADMIN_PORT !== undefined) {
    const port = Number(e.ADMIN_PORT);
    if (!Number.isInteger(port) || port < 0 || port > 65535) issues.push(`ADMIN_PORT: '${e.ADMIN_PORT}' is not a port number (0-65535)`);
    else if (port !== 0 && port === e.PORT) issues.push("ADMIN_PORT: must differ from PORT");
    else admin = { host: e.ADMIN_HOST ?? e.HOST, port };
  } else if (e.ADMIN_HOST !== undefined) issues.push("ADMIN_HOST: needs ADMIN_PORT");
  for (const b of e.KAFKA_BROKERS) if (!/^[^:/\s]+:\d+$/.test(b)) issues.push(`KAFKA_BROKERS: '${b}' is not host:port`);
  const tracingEnabled = tracingWanted(e, issues);
  let apiKeys: AccessConfig["apiKeys"] = [];
  try {
    const text = [e.API_KEYS ?? "", e.API_KEYS_FILE === undefined ? "" : readFileSync(e.API_KEYS_FILE, "utf8")].join("\n");
    apiKeys = parseApiKeys(text);
  } catch (err) {
    issues.push(`API_KEYS/API_KEYS_FILE: ${err instanceof Error ? err.message : String(err)}`);
  }
  let internalSecret = e.CORE_SHARED_SECRET;
  if (e.CORE_SHARED_SECRET_FILE !== undefined) {
    try {
      internalSecret = readFileSync(e.CORE_SHARED_SECRET_FILE, "utf8").trim();
    } catch (err) {
      issues.push(`CORE_SHARED_SECRET_FILE: ${err instanceof Error ? err.message : String(err)}`);
    }
  }
  if (internalSecret !== undefined && internalSecret.length < 16) issues.push("CORE_SHARED_SECRET: use at least 16 characters");
  const loopback = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/.test(e.HOST);
  const open = apiKeys.length === 0 && e.JWT_KEY_FILE === undefined;
  if (role !== "core" && open && !loopback && !e.AUTH_DISABLED) {
    issues.push(`API_KEYS/API_KEYS_FILE/JWT_KEY_FILE: a public edge on ${e.HOST} needs credentials (or AUTH_DISABLED=true behind a trusted gateway)`);
  }
  if (role === "core" && !loopback && internalSecret === undefined && e.TLS_CLIENT_CA_FILE === undefined && !e.AUTH_DISABLED) {
    issues.push(`CORE_SHARED_SECRET/TLS_CLIENT_CA_FILE: a core on ${e.HOST} must authenticate its edges`);
  }
  if (issues.length > 0) throw new ConfigError(issues);

  return deepFreeze({
    role,
    nodeId: e.NODE_ID ?? `${role}-${process.pid}`,
    logLevel: e.LOG_LEVEL,
    server: { host: e.HOST, port: e.PORT, tls, clientCaFile: e.TLS_CLIENT_CA_FILE, servePage: e.SERVE_PAGE && role !== "core", admin },
    model: {
      ref: e.CATEGORIZE_MODEL,
      cacheDir: e.CATEGORIZE_MODEL_CACHE_DIR,
      hubEndpoint: e.HF_ENDPOINT,
      hubToken: e.HF_TOKEN,
      intraOpThreads: e.ORT_INTRA_OP_THREADS,
      interOpThreads: e.ORT_INTER_OP_THREADS,
      inWorker: e.ORT_WORKER_THREAD,
      sessions: e.ORT_SESSIONS,
      x64QuantPrecision: e.ORT_X64_QUANT_PRECISION,
    },
    taxonomy: { file: e.CATEGORIZE_TAXONOMY, minScore: e.CATEGORIZE_CATEGORY_MIN_SCORE, topics: categoryTopics },
    batching: {
      maxBatchSize: e.BATCH_MAX_SIZE,
      maxDelayMs: e.BATCH_MAX_DELAY_MS,
      dispatchWhenIdle: e.BATCH_DISPATCH_WHEN_IDLE,
      queueLimit: e.BATCH_QUEUE_LIMIT,
      streamMaxInFlight: e.CORE_STREAM_MAX_IN_FLIGHT,
    },
    edge: {
      coreUrls: e.CORE_URLS,
      coreTls: e.CORE_TLS_CA_FILE === undefined ? undefined : { caFile: e.CORE_TLS_CA_FILE, ...coreClientCert },
      retryAttempts: e.CORE_RETRY_ATTEMPTS,
      maxImageBytes: e.MAX_IMAGE_BYTES,
      maxImagePixels: e.MAX_IMAGE_PIXELS,
      maxImageDimension: e.MAX_IMAGE_DIMENSION,
      decodeTimeoutMs: e.DECODE_TIMEOUT_MS,
      preprocessConcurrency: e.PREPROCESS_CONCURRENCY,
      vipsThreads: e.VIPS_THREADS,
      uvThreads: e.UV_THREADPOOL_SIZE,
      cacheMaxEntries: e.CACHE_MAX_ENTRIES,
      cacheTtlMs: e.CACHE_TTL_MS,
      streamWindow: e.STREAM_WINDOW,
      inProcessCore: e.IN_PROCESS_CORE,
      requestTimeoutMs: e.REQUEST_TIMEOUT_MS,
    },
    store: {
      databaseUrl: e.DATABASE_URL,
      dataDir: e.DATA_DIR,
      poolMax: e.DB_POOL_MAX,
      statementTimeoutMs: e.DB_STATEMENT_TIMEOUT_MS,
      kind: storeKind,
      memoryMaxImages: e.MEMORY_STORE_MAX_IMAGES,
    },
    objects: {
      s3:
        e.S3_ENDPOINT === undefined
          ? undefined
          : { endpoint: e.S3_ENDPOINT, accessKey: e.S3_ACCESS_KEY ?? "", secretKey: e.S3_SECRET_KEY ?? "", region: e.S3_REGION },
      bucket: e.S3_BUCKET,
      multipartThresholdBytes: e.S3_MULTIPART_THRESHOLD_BYTES,
      retentionDays: e.RETENTION_DAYS,
      retentionIntervalMs: e.RETENTION_INTERVAL_MS,
      retentionBatch: e.RETENTION_BATCH,
      orphanGraceMs: e.ORPHAN_GRACE_MS,
    },
    kafka: {
      brokers: e.KAFKA_BROKERS,
      clientId: e.KAFKA_CLIENT_ID,
      partitions: e.KAFKA_TOPIC_PARTITIONS,
      replicationFactor: e.KAFKA_REPLICATION_FACTOR,
      consumerGroup: e.KAFKA_CONSUMER_GROUP,
      jobMaxAttempts: e.KAFKA_JOB_MAX_ATTEMPTS,
      outboxPollMs: e.OUTBOX_POLL_MS,
      outboxBatch: e.OUTBOX_BATCH,
      asyncConsumer: e.ASYNC_CONSUMER,
    },
    tracing: { enabled: tracingEnabled },
    qualityWindowHours: e.QUALITY_WINDOW_HOURS,
    access: {
      open,
      operatorsOpen: open && (loopback || e.AUTH_DISABLED),
      apiKeys,
      jwt: e.JWT_KEY_FILE === undefined ? undefined : { keyFile: e.JWT_KEY_FILE, issuer: e.JWT_ISSUER, audience: e.JWT_AUDIENCE, tenantClaim: e.JWT_TENANT_CLAIM },
      internalSecret,
      rate: { perSecond: e.RATE_LIMIT_RPS, burst: e.RATE_LIMIT_BURST, concurrency: e.RATE_LIMIT_CONCURRENCY },
      corsOrigins: e.CORS_ORIGINS,
    },
    shutdownGraceMs: e.SHUTDOWN_GRACE_MS,
    readinessIntervalMs: e.READINESS_INTERVAL_MS,
  });
}

/**
 * Tracing is off by default (the embedded node exports nothing). It is on when
 * OTEL_TRACES_EXPORTER=otlp, or when an OTLP endpoint is given and the exporter
 * is not set to "none"; OTEL_SDK_DISABLED=true turns it off whatever else is set.
 * Only OTLP over http/protobuf is built in, so other exporters and protocols are
 * refused rather than silently ignored.
 */
function tracingWanted(e: Env, issues: string[]): boolean {
  const exporter = e.OTEL_TRACES_EXPORTER?.toLowerCase();
  if (exporter !== undefined && exporter !== "otlp" && exporter !== "none") {
    issues.push(`OTEL_TRACES_EXPORTER: '${e.OTEL_TRACES_EXPORTER}' is not supported (otlp or none)`);
  }
  for (const [key, value] of [
    ["OTEL_EXPORTER_OTLP_ENDPOINT", e.OTEL_EXPORTER_OTLP_ENDPOINT],
    ["OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT],
  ] as const) {
    if (value !== undefined && !/^https?:\/\/[^/\s]+(\/\S*)?$/.test(value)) issues.push(`${key}: '${value}' is not an http(s) URL`);
  }
  for (const [key, value] of [
    ["OTEL_EXPORTER_OTLP_PROTOCOL", e.OTEL_EXPORTER_OTLP_PROTOCOL],
    ["OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", e.OTEL_EXPORTER_OTLP_TRACES_PROTOCOL],
  ] as const) {
    if (value !== undefined && value !== "http/protobuf") issues.push(`${key}: '${value}' is not supported (http/protobuf)`);
  }
  if (e.OTEL_SDK_DISABLED || exporter === "none") return false;
  return exporter === "otlp" || e.OTEL_EXPORTER_OTLP_ENDPOINT !== undefined || e.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT !== undefined;
}

function deepFreeze<T>(value: T): T {
  if (value !== null && typeof value === "object") {
    for (const v of Object.values(value)) deepFreeze(v);
    Object.freeze(value);
  }
  return value;
}
