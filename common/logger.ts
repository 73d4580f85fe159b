import { pino, type DestinationStream, type Logger } from "pino";
import { activeTraceIds } from "./spans.js";

export type { Logger };

/**
 * JSON logs to stdout with service and node id on every line. Image bytes and
 * secrets are never passed to the logger; the redact list is a second guard.
 * A line written inside an active span carries its trace_id and span_id.
 */
export function createLogger(options: { level: string; service: string; nodeId: string; destination?: DestinationStream }): Logger {
  return pino(
    {
      level: options.level,
      base: { service: options.service, node_id: options.nodeId },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      mixin: activeTraceIds,
      redact: { paths: ["*.authorization", "*.password", "*.secretKey", "*.token", "*.image", "*.chunk", "*.data"], censor: "[redacted]" },
    },
    options.destination,
  );
}
