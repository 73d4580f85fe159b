import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import { resolveLocalModel, type ResolvedModel } from "../../core/model-manifest.js";
import { createModelRunnerPool, createOnnxModelRunner, createWorkerModelRunner, type ModelRunner } from "../../core/model-runner.js";
import { createInputEncoder } from "../../core/tensor.js";
import { modelPath } from "../support/fixtures.js";

describe("model session on a worker thread", () => {
  let model: ResolvedModel;
  let inThread: ModelRunner;
  let worker: ModelRunner;
  const threads = { intraOpThreads: 1, interOpThreads: 1 };
  const floats = 3 * 224 * 224;

  before(async () => {
    model = await resolveLocalModel(modelPath);
    [inThread, worker] = await Promise.all([createOnnxModelRunner(model.manifest, model.modelPath, threads), createWorkerModelRunner(model.manifest, model.modelPath, threads)]);
  });
  after(async () => {
    await Promise.all([inThread.close(), worker.close()]);
  });

  it("gives the same logits as the session on the calling thread, for every item of a batch", async () => {
    const input = new Float32Array(floats * 4);
    for (let i = 0; i < input.length; i++) input[i] = Math.sin(i * 0.37) * 2;
    const [a, b] = await Promise.all([inThread.run(input, 3), worker.run(input, 3)]);
    assert.equal(b.length, 3 * 1000);
    assert.deepEqual(Array.from(b), Array.from(a));
  });

  it("leaves the caller's buffer to the caller: it can be reused while a run is in flight", async () => {
    const input = new Float32Array(floats).fill(0.5);
    const expected = await inThread.run(input, 1);
    const pending = worker.run(input, 1);
    input.fill(-3);
    assert.deepEqual(Array.from(await pending), Array.from(expected));
  });

  it("encodes uint8 wire tensors in the worker to the same logits as a float input encoded here", async () => {
    const encoder = createInputEncoder(model.manifest);
    const wire = [0, 1].map((k) => Uint8Array.from({ length: encoder.wireBytes }, (_, i) => (i * 7 + k * 31) % 256));
    const floatsIn = new Float32Array(floats * 2);
    wire.forEach((w, i) => encoder.encode(w, floatsIn, i));
    const [a, b] = await Promise.all([inThread.run(floatsIn, 2), worker.runWire(wire)]);
    assert.deepEqual(Array.from(b), Array.from(a));
  });

  it("spreads runs over the sessions of a pool, with the same logits", async () => {
    const second = await createWorkerModelRunner(model.manifest, model.modelPath, threads);
    const pool = createModelRunnerPool([worker, second]);
    try {
      const input = new Float32Array(floats).fill(0.25);
      const outs = await Promise.all([1, 2, 3, 4].map(() => pool.run(input, 1)));
      for (const o of outs) assert.deepEqual(Array.from(o), Array.from(outs[0]!));
    } finally {
      await second.close();
    }
  });

  it("fails a run the session refuses with its error, and keeps serving the next one", async () => {
    // Two items declared, one item of data: onnxruntime refuses the tensor.
    await assert.rejects(worker.run(new Float32Array(floats), 2), /size|length|dims|shape/i);
    assert.equal((await worker.run(new Float32Array(floats), 1)).length, 1000);
  });

  it("refuses runs once closed, and closing twice is harmless", async () => {
    const runner = await createWorkerModelRunner(model.manifest, model.modelPath, threads);
    await runner.close();
    await runner.close();
    await assert.rejects(runner.run(new Float32Array(floats), 1), /closed/);
  });

  it("reports a model the manifest does not describe as a load failure", async () => {
    const wrong = { ...model.manifest, input: { ...model.manifest.input, name: "not-the-input" } };
    await assert.rejects(createWorkerModelRunner(wrong, model.modelPath, threads), /manifest names input 'not-the-input'/);
  });
});
