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
  /** Nodes (other than those named) that exited, with the end of what they printed (a crash's stack). */
  unexpectedExits(except?: readonly NodeProcess[]): string[];
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
    const all: NodeProcess[] = edge === undefined ? cores : [edge, ...cores];
    await Promise.all(all.map((n) => n.kill("SIGKILL")));
  };
  try {
    // Settled, not all: when one core fails to start, the ones that did are still stopped below.
    const started = await Promise.allSettled(Array.from({ length: options.cores }, (_, i) => spawnNode("core", { ...common, NODE_ID: `${options.name}-core-${i}`, ...options.coreEnv })));
    for (const s of started) if (s.status === "fulfilled") cores.push(s.value);
    const failed = started.find((s) => s.status === "rejected");
    if (failed !== undefined) throw failed.reason;
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
    unexpectedExits: (except = []) =>
      [e, ...cores]
        .filter((n) => !except.includes(n) && (n.child.exitCode !== null || n.child.signalCode !== null))
        .map((n) => `${n === e ? "edge" : "core"} ${n.url} exited (${n.child.exitCode ?? n.child.signalCode}):\n${crashText(n.output())}`),
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

/** What a node printed that is not a JSON log line (an uncaught exception's stack), else its last log lines. */
function crashText(output: string): string {
  const lines = output.split("\n");
  const plain = lines.filter((l) => l.trim() !== "" && !l.startsWith("{"));
  return plain.length > 0 ? plain.slice(0, 30).join("\n") : lines.slice(-20).join("\n");
}
