import { randomBytes } from "node:crypto";
import { fromBinary, type DescMessage, type MessageShape } from "@bufbuild/protobuf";
import { s3Store, sql } from "../../support/services.js";
import { testKafka } from "../../support/test-kafka.js";

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

/** One readiness transition seen by a poller. */
export interface ReadyChange {
  readonly at: number;
  readonly ready: boolean;
  readonly detail: string;
}

/**
 * Polls GET /readyz of a node every intervalMs and records transitions
 * (ready, not ready, unreachable). Not tied to a test's node object: the
 * nodes are child processes. Stops by itself after maxMs.
 */
export function pollReadiness(url: string, intervalMs = 100, maxMs = 600_000) {
  const changes: ReadyChange[] = [];
  // Which checks were failing, on every change of that set (a non-critical one fails while the node stays ready).
  const failing: { at: number; names: readonly string[] }[] = [];
  let last: boolean | undefined;
  let running = true;
  const until = Date.now() + maxMs;
  const loop = (async () => {
    while (running && Date.now() < until) {
      let ready = false;
      let detail = "";
      try {
        const res = await fetch(`${url}/readyz`, { signal: AbortSignal.timeout(2_000) });
        const body = (await res.json()) as { ready: boolean; checks: Record<string, { ok: boolean; detail?: string }> };
        ready = res.status === 200 && body.ready;
        const down = Object.entries(body.checks).filter(([, c]) => !c.ok);
        detail = down.map(([k, c]) => `${k}: ${c.detail ?? "down"}`).join("; ");
        const names = down.map(([k]) => k).sort();
        if (names.join() !== (failing.at(-1)?.names ?? []).join()) failing.push({ at: Date.now(), names });
      } catch (err) {
        detail = `unreachable: ${err instanceof Error ? err.message : String(err)}`;
      }
      if (ready !== last) {
        changes.push({ at: Date.now(), ready, detail });
        last = ready;
      }
      await sleep(intervalMs);
    }
  })();
  return {
    changes: () => changes as readonly ReadyChange[],
    current: () => last,
    /** Whether the named check was seen failing at some point in [from, to]. */
    checkFailedBetween(name: string, from: number, to: number): boolean {
      let state = false;
      for (const f of failing) {
        if (f.at > to) break;
        if (f.at <= from) state = f.names.includes(name);
        else if (f.names.includes(name)) return true;
      }
      return state;
    },
    /** Whether the node was seen not ready at some point in [from, to]. */
    wasNotReadyBetween(from: number, to: number): boolean {
      let state = true;
      for (const c of changes) {
        if (c.at > to) break;
        if (c.at <= from) state = c.ready;
        else if (!c.ready) return true;
      }
      return !state;
    },
    /** The first time at or after t the node was ready. */
    readyAgainAt(t: number): number | undefined {
      let state: boolean | undefined;
      for (const c of changes) {
        if (c.at <= t) state = c.ready;
        else if (c.ready) return state === true ? t : c.at;
      }
      return state === true ? t : undefined;
    },
    async waitFor(ready: boolean, timeoutMs: number): Promise<number> {
      const t = Date.now();
      while (last !== ready) {
        if (Date.now() - t > timeoutMs) throw new Error(`${url}/readyz did not become ${ready ? "ready" : "not ready"} within ${timeoutMs} ms (${JSON.stringify(changes.at(-1))})`);
        await sleep(50);
      }
      return Date.now() - t;
    },
    async stop(): Promise<void> {
      running = false;
      await loop;
    },
  };
}

/** Current end offsets of a topic, by partition (take before the load starts). */
export async function topicEnd(brokers: string, topic: string): Promise<Map<number, string>> {
  const { kafka, closeSockets } = testKafka(brokers, "reliability-offsets");
  const admin = kafka.admin();
  try {
    await admin.connect();
    return new Map((await admin.fetchTopicOffsets(topic)).map((p) => [p.partition, p.offset]));
  } finally {
    await admin.disconnect().catch(() => undefined);
    closeSockets();
  }
}

export interface TopicMessage<D extends DescMessage> {
  readonly key: string;
  readonly partition: number;
  readonly offset: string;
  readonly value: MessageShape<D>;
}

/**
 * Reads a topic from the given offsets (taken before the load) with a fresh
 * consumer group, created after the faults so it needs no reconnect through
 * them, until the predicate holds or the timeout passes. The topic is shared
 * with other tests: callers filter by their own keys.
 */
export async function readTopicFrom<D extends DescMessage>(
  brokers: string,
  topic: string,
  schema: D,
  from: ReadonlyMap<number, string>,
  until: (messages: readonly TopicMessage<D>[]) => boolean,
  timeoutMs: number,
): Promise<TopicMessage<D>[]> {
  const { kafka, closeSockets } = testKafka(brokers, "reliability-reader");
  const consumer = kafka.consumer({ groupId: `reliability-${randomBytes(6).toString("hex")}` });
  const seen: TopicMessage<D>[] = [];
  try {
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    await consumer.run({
      eachMessage: ({ partition, message }) => {
        const start = BigInt(from.get(partition) ?? "0");
        if (BigInt(message.offset) >= start && message.value !== null) {
          seen.push({ key: message.key?.toString() ?? "", partition, offset: message.offset, value: fromBinary(schema, message.value) });
        }
        return Promise.resolve();
      },
    });
    for (const [partition, offset] of from) consumer.seek({ topic, partition, offset });
    const deadline = Date.now() + timeoutMs;
    while (!until(seen) && Date.now() < deadline) await sleep(100);
    return seen;
  } finally {
    await consumer.disconnect().catch(() => undefined);
    closeSockets();
  }
}

/** Rows of the isolated schema the reliability checks look at. */
export async function storeFacts(env: Record<string, string>): Promise<{ classifications: number; images: number; outbox: number; duplicates: { sha256: string; n: string }[]; hashes: Set<string> }> {
  const [c] = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM classifications");
  const [i] = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM images");
  const [o] = await sql<{ n: string }>(env, "SELECT count(*) AS n FROM outbox");
  const duplicates = await sql<{ sha256: string; n: string }>(env, "SELECT sha256, count(*) AS n FROM classifications GROUP BY 1 HAVING count(*) > 1");
  const hashes = new Set((await sql<{ sha256: string }>(env, "SELECT sha256 FROM classifications")).map((r) => r.sha256));
  return { classifications: Number(c!.n), images: Number(i!.n), outbox: Number(o!.n), duplicates, hashes };
}

/** Image rows (all, or those of the given hashes) whose original is missing from the bucket (a half-written record), how many were checked, and how many originals the bucket holds. */
export async function missingObjects(env: Record<string, string>, only?: ReadonlySet<string>): Promise<{ checked: number; missing: string[]; objects: number }> {
  const store = s3Store(env);
  const rows = (await sql<{ sha256: string; object_key: string | null }>(env, "SELECT sha256, object_key FROM images")).filter((r) => only === undefined || only.has(r.sha256));
  const missing: string[] = [];
  for (let i = 0; i < rows.length; i += 16) {
    await Promise.all(
      rows.slice(i, i + 16).map(async (r) => {
        if (r.object_key === null || r.object_key === "" || !(await store.exists(r.object_key))) missing.push(`${r.sha256} -> ${r.object_key ?? "(null)"}`);
      }),
    );
  }
  const objects = (await store.list("originals/")).length;
  return { checked: rows.length, missing, objects };
}

/** Sum of a Prometheus counter or gauge over all label sets (optionally only those matching a label filter). */
export async function scrapeMetric(url: string, name: string, labelFilter?: RegExp): Promise<number> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_:]+)(\{[^}]*\})?\s+([-+0-9.eE]+|NaN)$/.exec(line);
    if (m === null || m[1] !== name) continue;
    if (labelFilter !== undefined && !labelFilter.test(m[2] ?? "")) continue;
    sum += Number(m[3]);
  }
  return sum;
}

/** Prints a named JSON report line to the test output (the numbers the final report is built from). */
export function report(name: string, data: unknown): void {
  console.log(`[reliability] ${name} ${JSON.stringify(data)}`);
}

/** A caught value as an Error, to rethrow. */
export function asError(e: unknown): Error {
  return e instanceof Error ? e : new Error(typeof e === "string" ? e : JSON.stringify(e));
}

/** The upper bound (le, seconds) of the bucket holding quantile q of a Prometheus histogram, summed over label sets. */
export async function histogramQuantileBound(url: string, name: string, q: number): Promise<{ count: number; le: number }> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const buckets = new Map<number, number>();
  for (const line of text.split("\n")) {
    const m = new RegExp(`^${name}_bucket\\{(?:[^}]*,)?le="([^"]+)"[^}]*\\}\\s+(\\d+)`).exec(line);
    if (m === null) continue;
    const le = m[1] === "+Inf" ? Number.POSITIVE_INFINITY : Number(m[1]);
    buckets.set(le, (buckets.get(le) ?? 0) + Number(m[2]));
  }
  const sorted = [...buckets].sort((a, b) => a[0] - b[0]);
  const count = sorted.at(-1)?.[1] ?? 0;
  const bound = sorted.find(([, n]) => n >= q * count);
  return { count, le: bound?.[0] ?? Number.NaN };
}
