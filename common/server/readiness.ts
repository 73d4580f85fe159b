import { EventEmitter, on } from "node:events";
import type { Logger } from "../logger.js";
import type { Metrics } from "../metrics.js";

/** One named dependency check; resolves when healthy, throws (or rejects) with the reason otherwise. */
export interface ReadinessCheck {
  readonly name: string;
  /**
   * False for a dependency the serving path can do without for a while (Kafka
   * behind the outbox): its failure marks the node degraded, not unready, so
   * load balancers keep sending traffic it can still answer. Default true.
   */
  readonly critical?: boolean;
  check(signal: AbortSignal): Promise<void>;
}

export interface CheckState {
  readonly ok: boolean;
  readonly critical: boolean;
  readonly detail?: string;
  readonly since: string;
}

/** The node's readiness: polled checks plus an explicit draining flag. */
export interface Readiness {
  isReady(): boolean;
  /** degraded: ready, but a non-critical dependency is failing. */
  snapshot(): { ready: boolean; draining: boolean; degraded: boolean; checks: Record<string, CheckState> };
  /** Marks the node as draining: not ready from now on, whatever the checks say. */
  setDraining(): void;
  add(check: ReadinessCheck): void;
  /** Runs every check now (start-up and tests), then keeps polling until the signal aborts. */
  start(signal: AbortSignal): Promise<void>;
  /** Yields the readiness now and on every change, until the signal aborts. */
  watch(signal: AbortSignal): AsyncIterable<boolean>;
}

export function createReadiness(options: { intervalMs: number; timeoutMs?: number; logger: Logger; metrics?: Metrics }): Readiness {
  const checks: ReadinessCheck[] = [];
  const states = new Map<string, CheckState>();
  const events = new EventEmitter();
  events.setMaxListeners(0);
  let draining = false;
  let last = false;

  const compute = () => !draining && checks.length > 0 && checks.every((c) => c.critical === false || states.get(c.name)?.ok === true);
  const publish = () => {
    const now = compute();
    options.metrics?.ready.set(now ? 1 : 0);
    if (now !== last) {
      last = now;
      options.logger.info({ ready: now, checks: Object.fromEntries(states) }, now ? "node ready" : "node not ready");
      events.emit("change", now);
    }
  };

  async function runCheck(check: ReadinessCheck, signal: AbortSignal): Promise<void> {
    const timeout = AbortSignal.any([signal, AbortSignal.timeout(options.timeoutMs ?? Math.max(options.intervalMs, 2000))]);
    let ok = true;
    let detail: string | undefined;
    try {
      await check.check(timeout);
    } catch (err) {
      ok = false;
      detail = err instanceof Error ? err.message : String(err);
    }
    const prev = states.get(check.name);
    if (prev === undefined || prev.ok !== ok || prev.detail !== detail) {
      states.set(check.name, { ok, critical: check.critical !== false, ...(detail === undefined ? {} : { detail }), since: new Date().toISOString() });
    }
    options.metrics?.dependencyUp.set({ dependency: check.name }, ok ? 1 : 0);
  }

  const runAll = (signal: AbortSignal) => Promise.all(checks.map((c) => runCheck(c, signal))).then(publish);

  return {
    isReady: () => last,
    snapshot: () => ({ ready: last, draining, degraded: last && [...states.values()].some((st) => !st.ok), checks: Object.fromEntries(states) }),
    setDraining() {
      draining = true;
      publish();
    },
    add(check) {
      checks.push(check);
    },
    async start(signal) {
      await runAll(signal);
      const loop = async () => {
        while (!signal.aborted) {
          await new Promise<void>((resolve) => {
            const t = setTimeout(resolve, options.intervalMs);
            signal.addEventListener("abort", () => {
              clearTimeout(t);
              resolve();
            }, { once: true });
          });
          if (!signal.aborted) await runAll(signal);
        }
      };
      loop().catch((err: unknown) => options.logger.error({ err }, "readiness loop failed"));
    },
    async *watch(signal) {
      yield last;
      try {
        for await (const [value] of on(events, "change", { signal })) yield value as boolean;
      } catch (err) {
        if (!signal.aborted) throw err;
      }
    },
  };
}
