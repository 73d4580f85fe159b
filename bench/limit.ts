import { availableParallelism } from "node:os";
import { create, fromBinary, toBinary } from "@bufbuild/protobuf";
import { DataType, InferRequestSchema, TensorLayout } from "../gen/categorize/v1/inference_pb.js";
import { loadModel, type LoadedModel } from "../core/loaded-model.js";
import { resolveLocalModel } from "../core/model-manifest.js";
import { preprocessImage, type PreprocessLimits, type PreprocessSpec } from "../edge/preprocess.js";
import { NOISE_CORES, ResourceMonitor, waitQuiet, type UsageReport } from "./resources.js";
import { mean, round } from "./stats.js";

export interface InferenceRow {
  /** ORT_INTRA_OP_THREADS of the session (0 = onnxruntime's default, one per core). */
  readonly intraOpThreads: number;
  readonly batchSize: number;
  readonly msPerRun: number;
  readonly msPerImage: number;
  readonly imagesPerSec: number;
}

export interface PipelineRow {
  readonly intraOpThreads: number;
  readonly batchSize: number;
  readonly images: number;
  readonly wallMs: number;
  readonly imagesPerSec: number;
  /** Mean per image while pipelined (preprocess is wall time of one image; run is a batch's time divided by its size). */
  readonly stageMs: { readonly preprocess: number; readonly encode: number; readonly run: number };
  readonly usage: UsageReport;
  /** Run a second time because other work disturbed the first run. */
  readonly retried?: boolean;
}

export interface WireRow {
  readonly format: "uint8 HWC" | "float32 CHW";
  readonly bytesPerImage: number;
  /** Edge work to make the tensor from sharp's uint8 HWC output. */
  readonly edgeEncodeMs: number;
  /** InferRequest protobuf serialization (edge) and parse (core). */
  readonly serializeMs: number;
  readonly parseMs: number;
  /** Core work to turn the received tensor into the model's float32 CHW input. */
  readonly coreDecodeMs: number;
  readonly totalMs: number;
}

export interface LimitResult {
  readonly images: number;
  readonly cpus: number;
  readonly preprocessConcurrency: number;
  /** ORT_INTRA_OP_THREADS values tried (ORT_INTER_OP_THREADS 1 as in the nodes). */
  readonly intraOpThreads: readonly number[];
  /** Stage costs in isolation, one image (or batch) at a time. */
  readonly isolated: {
    readonly preprocessMs: number;
    readonly preprocessImagesPerSec: number;
    readonly encodeMs: number;
    readonly inference: readonly InferenceRow[];
  };
  readonly pipelined: readonly PipelineRow[];
  readonly best: { readonly batchSize: number; readonly intraOpThreads: number; readonly imagesPerSec: number };
  readonly wire: { readonly rows: readonly WireRow[]; readonly used: string };
}

const LIMITS: PreprocessLimits = { maxPixels: 64_000_000, maxDimension: 16_384, decodeTimeoutMs: 5_000 };

/**
 * Stage 1, the limit: sharp preprocessing and onnxruntime inference in this
 * process, no network, no storage. Preprocessing runs `cores` images at once
 * (the edge's PREPROCESS_CONCURRENCY default) overlapped with inference of
 * batches of B (the core's batcher), as the product does.
 */
export async function measureLimit(options: {
  modelPath: string;
  images: readonly Buffer[];
  batchSizes: readonly number[];
  intraOpThreads: readonly number[];
  /** When > 0, a pipelined run disturbed by other work is run again after waiting (up to this long) for a quiet machine. */
  quietWaitMs: number;
  log: (s: string) => void;
}): Promise<LimitResult> {
  const { images, log } = options;
  const cpus = availableParallelism();
  const resolved = await resolveLocalModel(options.modelPath);
  const p = resolved.manifest.preprocessing;
  const spec: PreprocessSpec = { resizeShorter: p.resizeShorter, cropHeight: p.cropHeight, cropWidth: p.cropWidth };
  const maxB = Math.max(...options.batchSizes);

  // Isolated preprocessing: one at a time, then `cpus` at a time (after a warm-up of libvips).
  await preprocessImage(images[0]!, spec, LIMITS);
  const hwcs: Uint8Array[] = [];
  const preMs: number[] = [];
  for (const img of images) {
    const t0 = performance.now();
    hwcs.push((await preprocessImage(img, spec, LIMITS)).hwc);
    preMs.push(performance.now() - t0);
  }
  const tPar = performance.now();
  await runPool(images.length, cpus, async (i) => {
    await preprocessImage(images[i]!, spec, LIMITS);
  });
  const preprocessImagesPerSec = (images.length * 1000) / (performance.now() - tPar);

  const inference: InferenceRow[] = [];
  const pipelined: PipelineRow[] = [];
  const encMs: number[] = [];
  let wire: WireRow[] = [];
  for (const intra of options.intraOpThreads) {
    const model = await loadModel(resolved, { intraOpThreads: intra, interOpThreads: 1 });
    try {
      const scratch = new Float32Array(model.encoder.inputFloats * maxB);
      for (let i = 0; i < maxB; i++) model.encoder.encode(hwcs[i % hwcs.length]!, scratch, i);
      for (const b of options.batchSizes) await model.runner.run(scratch, b);
      if (encMs.length === 0) {
        for (let i = 0; i < hwcs.length; i++) {
          const t0 = performance.now();
          model.encoder.encode(hwcs[i]!, scratch, i % maxB);
          encMs.push(performance.now() - t0);
        }
        log(`  isolated: preprocess ${mean(preMs).toFixed(2)} ms/image, encode ${mean(encMs).toFixed(3)} ms/image`);
        wire = measureWire(model, hwcs, spec);
      }
      const threads = intra === 0 ? "auto" : String(intra);
      for (const b of options.batchSizes) {
        const runs = Math.max(3, Math.ceil(images.length / b));
        let ms = 0;
        for (let r = 0; r < runs; r++) {
          for (let i = 0; i < b; i++) model.encoder.encode(hwcs[(r * b + i) % hwcs.length]!, scratch, i);
          const t0 = performance.now();
          await model.runner.run(scratch, b);
          ms += performance.now() - t0;
        }
        ms /= runs;
        inference.push({ intraOpThreads: intra, batchSize: b, msPerRun: round(ms), msPerImage: round(ms / b), imagesPerSec: round((b * 1000) / ms, 1) });
      }
      log(`  inference alone (intra-op ${threads}): ${inference.filter((r) => r.intraOpThreads === intra).map((r) => `b${r.batchSize} ${r.msPerRun} ms`).join(", ")}`);
      for (const b of options.batchSizes) {
        let row = await pipeline(model, intra, images, spec, b, cpus);
        if (row.usage.otherCores > NOISE_CORES && options.quietWaitMs > 0) {
          log(`  pipelined (intra-op ${threads}), batch ${b}: other work took ${row.usage.otherCores} CPUs; waiting for a quiet machine to run it again`);
          await waitQuiet(options.quietWaitMs);
          const again = { ...(await pipeline(model, intra, images, spec, b, cpus)), retried: true };
          if (again.usage.otherCores < row.usage.otherCores) row = again;
        }
        pipelined.push(row);
        log(`  pipelined (intra-op ${threads}), batch ${b}: ${row.imagesPerSec} images/s (CPU ${row.usage.machineCores}/${row.usage.cpus}, other ${row.usage.otherCores})`);
      }
    } finally {
      await model.runner.close();
    }
  }
  const best = pipelined.reduce((a, r) => (r.imagesPerSec > a.imagesPerSec ? r : a));
  return {
    images: images.length,
    cpus,
    preprocessConcurrency: cpus,
    intraOpThreads: options.intraOpThreads,
    isolated: {
      preprocessMs: round(mean(preMs)),
      preprocessImagesPerSec: round(preprocessImagesPerSec, 1),
      encodeMs: round(mean(encMs), 3),
      inference,
    },
    pipelined,
    best: { batchSize: best.batchSize, intraOpThreads: best.intraOpThreads, imagesPerSec: best.imagesPerSec },
    wire: { rows: wire, used: "uint8 HWC (edge sends sharp's output as is; core normalizes to float32 CHW with a lookup table)" },
  };
}

async function pipeline(model: LoadedModel, intraOpThreads: number, images: readonly Buffer[], spec: PreprocessSpec, batchSize: number, concurrency: number): Promise<PipelineRow> {
  const floats = model.encoder.inputFloats;
  const batch = new Float32Array(floats * batchSize);
  const ready: Uint8Array[] = [];
  let produced = 0;
  let wake: (() => void) | undefined;
  const preMs: number[] = [];
  const encMs: number[] = [];
  const runMsPerImage: number[] = [];
  const monitor = new ResourceMonitor([{ name: "bench (in-process)", pid: process.pid }]);
  monitor.start();
  const started = performance.now();

  const producers = runPool(images.length, concurrency, async (i) => {
    const t0 = performance.now();
    const { hwc } = await preprocessImage(images[i]!, spec, LIMITS);
    preMs.push(performance.now() - t0);
    ready.push(hwc);
    produced++;
    wake?.();
  });

  let consumed = 0;
  while (consumed < images.length) {
    if (ready.length < batchSize && produced < images.length) {
      await new Promise<void>((r) => (wake = r));
      wake = undefined;
      continue;
    }
    const items = ready.splice(0, batchSize);
    const t0 = performance.now();
    items.forEach((hwc, i) => model.encoder.encode(hwc, batch, i));
    const t1 = performance.now();
    await model.runner.run(batch, items.length);
    const t2 = performance.now();
    encMs.push((t1 - t0) / items.length);
    for (let i = 0; i < items.length; i++) runMsPerImage.push((t2 - t1) / items.length);
    consumed += items.length;
  }
  await producers;
  const wallMs = performance.now() - started;
  return {
    intraOpThreads,
    batchSize,
    images: images.length,
    wallMs: round(wallMs),
    imagesPerSec: round((images.length * 1000) / wallMs, 1),
    stageMs: { preprocess: round(mean(preMs)), encode: round(mean(encMs), 3), run: round(mean(runMsPerImage)) },
    usage: monitor.stop(),
  };
}

/** Runs fn(0..n-1) with at most `concurrency` at once. */
async function runPool(n: number, concurrency: number, fn: (i: number) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(n, concurrency) }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

/** What each wire format costs per image: bytes, edge encode, protobuf both ways, core decode. */
function measureWire(model: LoadedModel, hwcs: readonly Uint8Array[], spec: PreprocessSpec): WireRow[] {
  const floats = model.encoder.inputFloats;
  const reps = Math.min(200, hwcs.length * 4);
  const base = { id: "1", sha256: "0".repeat(64), topK: 10, requestId: "bench", deadlineUnixMs: 0n, traceContext: {} };
  const rows: WireRow[] = [];
  for (const format of ["uint8 HWC", "float32 CHW"] as const) {
    let edge = 0;
    let ser = 0;
    let parse = 0;
    let core = 0;
    let bytes = 0;
    for (let r = 0; r < reps; r++) {
      const hwc = hwcs[r % hwcs.length]!;
      let t0 = performance.now();
      let data: Uint8Array;
      if (format === "uint8 HWC") data = hwc;
      else {
        const f = new Float32Array(floats);
        model.encoder.encode(hwc, f, 0);
        data = new Uint8Array(f.buffer);
      }
      edge += performance.now() - t0;
      const tensor =
        format === "uint8 HWC"
          ? { dtype: DataType.UINT8, layout: TensorLayout.HWC, shape: [spec.cropHeight, spec.cropWidth, 3], data }
          : { dtype: DataType.FLOAT32, layout: TensorLayout.CHW, shape: [3, spec.cropHeight, spec.cropWidth], data };
      t0 = performance.now();
      const wire = toBinary(InferRequestSchema, create(InferRequestSchema, { ...base, tensor }));
      ser += performance.now() - t0;
      bytes = data.byteLength;
      t0 = performance.now();
      const got = fromBinary(InferRequestSchema, wire);
      parse += performance.now() - t0;
      t0 = performance.now();
      const input = new Float32Array(floats);
      if (format === "uint8 HWC") model.encoder.encode(got.tensor!.data, input, 0);
      else new Uint8Array(input.buffer).set(got.tensor!.data);
      core += performance.now() - t0;
    }
    const per = (x: number) => round(x / reps, 3);
    rows.push({ format, bytesPerImage: bytes, edgeEncodeMs: per(edge), serializeMs: per(ser), parseMs: per(parse), coreDecodeMs: per(core), totalMs: per(edge + ser + parse + core) });
  }
  return rows;
}
