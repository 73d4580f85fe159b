import { randomBytes } from "node:crypto";
import { create } from "@bufbuild/protobuf";
import { Code } from "@connectrpc/connect";
import { DataType, InferRequestSchema, TensorLayout, type InferRequest } from "../../../gen/categorize/v1/inference_pb.js";
import { createAsyncQueue } from "../../../common/async-queue.js";
import { inferenceClient } from "../../support/clients.js";
import { summarize, type LoadSummary, type RequestRecord } from "./load.js";

/**
 * Load straight on a core's InferenceService stream, the way an edge drives
 * it: one stream, `inFlight` requests outstanding, each a uint8 HWC tensor
 * under a fresh random sha256 (no original stored: object_key ""). Without
 * an edge's decoding in front, the core's batcher is the only limit, so a
 * full queue shows up whatever the machine's speed. Bounded by count and time.
 */
export async function directCoreLoad(options: { coreUrl: string; inFlight: number; maxRequests: number; maxMs: number; deadlineMs: number }): Promise<{ summary: LoadSummary; records: RequestRecord[] }> {
  const client = inferenceClient(options.coreUrl);
  const info = await client.getModelInfo({});
  const p = info.preprocessing!;
  const data = new Uint8Array(randomBytes(p.cropHeight * p.cropWidth * 3));
  const requests = createAsyncQueue<InferRequest>();
  const abort = new AbortController();
  const pending = new Map<string, { sha256: string; sentAt: number; t0: number; settle: (r: RequestRecord) => void }>();
  const records: RequestRecord[] = [];
  const started = performance.now();
  let next = 0;
  let stoppedBy: LoadSummary["stoppedBy"] = "count";

  const reader = (async () => {
    try {
      for await (const res of client.infer(requests.iterate(abort.signal), { signal: abort.signal })) {
        const p = pending.get(res.id);
        if (p === undefined) continue;
        pending.delete(res.id);
        const outcome = res.outcome.case === "result" ? "OK" : res.outcome.case === "error" ? (Code[res.outcome.value.code] ?? String(res.outcome.value.code)) : "EMPTY";
        const message = res.outcome.case === "error" ? res.outcome.value.message : undefined;
        p.settle({ index: Number(res.id), sha256: p.sha256, sentAt: p.sentAt, endedAt: Date.now(), latencyMs: performance.now() - p.t0, outcome, ...(message === undefined ? {} : { message }) });
      }
    } catch {
      // The stream ended (abort at the end, or the core went away): what is pending is settled below.
    }
  })();

  const send = (): Promise<RequestRecord> => {
    const i = next++;
    const sha256 = randomBytes(32).toString("hex");
    const sentAt = Date.now();
    return new Promise<RequestRecord>((resolve) => {
      pending.set(String(i), { sha256, sentAt, t0: performance.now(), settle: resolve });
      requests.push(
        create(InferRequestSchema, {
          id: String(i),
          sha256,
          tensor: { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape: [p.cropHeight, p.cropWidth, 3], data },
          image: { mime: "image/jpeg", sizeBytes: 1n, width: p.cropWidth, height: p.cropHeight, objectKey: "" },
          deadlineUnixMs: BigInt(sentAt + options.deadlineMs),
          topK: 3,
          requestId: `direct-${i}`,
        }),
      );
    });
  };
  const worker = async () => {
    for (;;) {
      if (next >= options.maxRequests) return;
      if (performance.now() - started >= options.maxMs) {
        stoppedBy = "time";
        return;
      }
      let timer: NodeJS.Timeout | undefined;
      const lost = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), options.deadlineMs + 5_000)));
      const rec = await Promise.race([send(), lost]);
      clearTimeout(timer);
      if (rec === undefined) {
        records.push({ index: -1, sha256: "", sentAt: 0, endedAt: Date.now(), latencyMs: options.deadlineMs + 5_000, outcome: "LOST" });
        return;
      }
      records.push(rec);
      // A refused item comes back at once: back off a little, like an edge, instead of spinning.
      if (rec.outcome !== "OK") await new Promise((r) => setTimeout(r, 20));
    }
  };
  await Promise.all(Array.from({ length: options.inFlight }, worker));
  requests.end();
  abort.abort();
  await reader;
  return { summary: summarize(records, performance.now() - started, stoppedBy), records };
}
