import { setMaxListeners } from "node:events";
import { unavailable } from "./errors.js";
import type { Logger } from "./logger.js";

/** A resource closed during shutdown, in reverse order of registration. */
export interface Closable {
  readonly name: string;
  close(signal: AbortSignal): Promise<void>;
}

/**
 * Explicit shutdown: flips to not-ready, aborts the shared signal so new work
 * is refused, then closes resources in reverse order of registration, each
 * bounded by the grace timer. Never exits the process itself.
 */
export interface Shutdown {
  /** Aborted when shutdown starts; long-lived loops and streams watch it. */
  readonly signal: AbortSignal;
  register(resource: Closable): void;
  run(reason: string): Promise<void>;
}

export function createShutdown(options: { graceMs: number; logger: Logger; onNotReady?: () => void }): Shutdown {
  const controller = new AbortController();
  // Every open stream watches it.
  setMaxListeners(0, controller.signal);
  const resources: Closable[] = [];
  let running: Promise<void> | undefined;

  async function runOnce(reason: string): Promise<void> {
    options.logger.info({ reason }, "shutdown: not ready, draining");
    options.onNotReady?.();
    controller.abort(unavailable(`node is shutting down (${reason})`));
    const grace = AbortSignal.timeout(options.graceMs);
    for (const resource of resources.slice().reverse()) {
      const started = Date.now();
      try {
        await resource.close(grace);
        options.logger.info({ resource: resource.name, ms: Date.now() - started }, "shutdown: closed");
      } catch (err) {
        options.logger.error({ resource: resource.name, err }, "shutdown: close failed");
      }
    }
    options.logger.info("shutdown: complete");
  }

  return {
    signal: controller.signal,
    register(resource) {
      resources.push(resource);
    },
    run(reason) {
      running ??= runOnce(reason);
      return running;
    },
  };
}
