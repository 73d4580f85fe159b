import assert from "node:assert/strict";
import { describe, it } from "node:test";
import { loadConfig } from "../../common/config.js";
import { planThreadBudget, threadBudgetGauge } from "../../common/thread-budget.js";

describe("thread budget", () => {
  it("gives the model one session as wide as the cores by default, and preprocesses one image per core on one libvips thread", () => {
    const b = planThreadBudget(loadConfig("all", {}), 2);
    assert.equal(b.ortSessions, 1);
    assert.equal(b.ortIntraOpThreads, 2);
    assert.equal(b.modelWorkerThreads, 1);
    assert.equal(b.preprocessConcurrency, 2);
    assert.equal(b.vipsThreads, 1);
    assert.ok(Object.isFrozen(b));
  });

  it("fits as many sessions as the cores hold when the intra-op width is set", () => {
    assert.equal(planThreadBudget(loadConfig("core", { ORT_INTRA_OP_THREADS: "1" }), 2).ortSessions, 2);
    assert.equal(planThreadBudget(loadConfig("core", { ORT_INTRA_OP_THREADS: "2" }), 8).ortSessions, 4);
    assert.equal(planThreadBudget(loadConfig("core", { ORT_INTRA_OP_THREADS: "4", ORT_SESSIONS: "3" }), 8).ortSessions, 3);
    assert.equal(planThreadBudget(loadConfig("core", { ORT_WORKER_THREAD: "false" }), 4).modelWorkerThreads, 0);
  });

  it("spends nothing on the model on an edge and nothing on preprocessing on a core", () => {
    const edge = planThreadBudget(loadConfig("edge", { CORE_URLS: "http://127.0.0.1:9000" }), 4);
    assert.deepEqual([edge.ortSessions, edge.ortIntraOpThreads, edge.modelWorkerThreads, edge.preprocessConcurrency], [0, 0, 0, 4]);
    const core = planThreadBudget(loadConfig("core", {}), 4);
    assert.deepEqual([core.preprocessConcurrency, core.vipsThreads, core.ortIntraOpThreads], [0, 0, 4]);
    assert.deepEqual(Object.fromEntries(threadBudgetGauge(core)), { cores: 4, preprocess_concurrency: 0, vips: 0, uv: core.uvThreads, ort_intra_op: 4, ort_inter_op: core.ortInterOpThreads, ort_sessions: 1, model_worker: 1 });
  });
});
