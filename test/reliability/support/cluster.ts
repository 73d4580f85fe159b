import { dataServices, isolatedEnv } from "../../support/services.js";
import { spawnNode, type NodeProcess } from "../../support/nodes.js";

/** The real services, or why the reliability tests are skipped. */
export function reliabilityServices(): { base: Record<string, string>; skip: false | string } {
  const available = dataServices();
  return available.skip === false ? { base: available.env, skip: false } : { base: {}, skip: available.skip };
}

export interface Cluster {
  readonly env: Record<string, string>;
  readonly cores: NodeProcess[];
  readonly edge: NodeProcess;
  /** Output of every node, for a failure message. */
  logs(): string;
  /** SIGKILLs whatever is still running. */
  stop(): Promise<void>;
}

/**
 * Cores and one edge as child processes on one isolated slice of the real
 * services (fresh schema, bucket and consumer group). The async job consumer
 * is off: a fresh consumer group would replay every job other tests left on
 * the shared classify-requests topic, which is noise here.
 */
export async function startCluster(options: {
  name: string;
  base: Record<string, string>;
  cores: number;
  coreEnv?: Record<string, string>;
  edgeEnv?: Record<string, string>;
}): Promise<Cluster> {
  const env = await isolatedEnv(options.base, options.name);
  const common = { ...env, ASYNC_CONSUMER: "false", OUTBOX_POLL_MS: "50", READINESS_INTERVAL_MS: "200" };
  const cores: NodeProcess[] = [];
  let edge: NodeProcess | undefined;
  const stop = async () => {
    await Promise.all([edge, ...cores].map((n) => n?.kill("SIGKILL")));
  };
  try {
    cores.push(...(await Promise.all(Array.from({ length: options.cores }, (_, i) => spawnNode("core", { ...common, NODE_ID: `${options.name}-core-${i}`, ...options.coreEnv })))));
    edge = await spawnNode("edge", {
      ...common,
      NODE_ID: `${options.name}-edge`,
      CORE_URLS: cores.map((c) => c.url).join(","),
      CACHE_MAX_ENTRIES: "0",
      REQUEST_TIMEOUT_MS: "20000",
      ...options.edgeEnv,
    });
  } catch (err) {
    await stop();
    throw err;
  }
  const e = edge;
  return {
    env,
    cores,
    edge: e,
    logs: () => [e, ...cores].map((n) => n.output().split("\n").filter((l) => /"level":"(warn|error|fatal)"/.test(l)).slice(-20).join("\n")).join("\n---\n"),
    stop,
  };
}

/** Whether the edge has a ready stream to every core (it connects asynchronously after it listens). */
export async function edgeStreams(url: string): Promise<{ ready: number; down: number; connecting: number }> {
  const text = await (await fetch(`${url}/metrics`, { signal: AbortSignal.timeout(5_000) })).text();
  const get = (state: string) => Number(new RegExp(`^categorize_edge_core_streams\\{state="${state}"[^}]*\\} (\\d+)`, "m").exec(text)?.[1] ?? "0");
  return { ready: get("ready"), down: get("down"), connecting: get("connecting") };
}
