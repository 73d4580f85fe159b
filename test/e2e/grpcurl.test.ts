import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { readImage } from "../support/fixtures.js";
import { spawnNode, startTestNode, type NodeProcess } from "../support/nodes.js";
import { authority, describeRun, findTool, killChildren, killStrayNodes, requiredTool, run, stopSpawned, type RunResult } from "./support/tools.js";

// grpcurl talks to the nodes through server reflection only: no -proto / -protoset flags anywhere.
const grpcurl = requiredTool("grpcurl", findTool("grpcurl"), "run infra/local/tools.sh grpcurl");

// The health check through reflection fails today:
//   Error invoking method "grpc.health.v1.Health/Check": target server does not expose service "grpc.health.v1.Health"
// because the reflection service only knows the application services. Kept as a TODO until
// common/server reflection also describes grpc.health.v1.Health; it then passes as is.

interface Label {
  index: number;
  name: string;
  score: number;
}
interface ClassifyJson {
  sha256: string;
  labels: Label[];
  model?: { name: string; version: string; sha256: string };
  requestId: string;
  image?: { mime: string; sizeBytes: string; width: number; height: number };
}

/** grpcurl TARGET VERB [SYMBOL] (list, describe), expecting a zero exit; returns stdout. */
async function ok(target: string, verb: readonly string[]): Promise<string> {
  const r = await run(grpcurl.require(), ["-plaintext", "-connect-timeout", "10", "-max-time", "25", target, ...verb], { timeoutMs: 30_000 });
  return okResult(r, `grpcurl ${[target, ...verb].join(" ")}`);
}

function okResult(r: RunResult, what: string): string {
  assert.equal(r.code, 0, describeRun(what, r));
  return r.stdout;
}

/** Runs grpcurl with the method after the target, as its command line wants. */
async function invoke(target: string, method: string, body: string): Promise<RunResult> {
  return run(grpcurl.require(), ["-plaintext", "-connect-timeout", "10", "-max-time", "25", "-d", "@", target, method], { input: body, timeoutMs: 30_000 });
}

async function list(target: string): Promise<string[]> {
  return (await ok(target, ["list"])).split("\n").map((l) => l.trim()).filter((l) => l !== "");
}

function classifyBody(file: string, requestId: string, topK = 3): string {
  return JSON.stringify({ image: readImage(file).toString("base64"), top_k: topK, request_id: requestId });
}

/** The same checks against any node that serves CategorizeService. */
function categorizeChecks(nodeUrl: () => string, label: string): void {
  it(`${label}: describe categorize.v1.CategorizeService shows its four methods, and a message type`, async () => {
    const target = authority(nodeUrl());
    const out = await ok(target, ["describe", "categorize.v1.CategorizeService"]);
    assert.match(out, /categorize\.v1\.CategorizeService is a service/);
    assert.match(out, /rpc Classify \( \.categorize\.v1\.ClassifyRequest \) returns \( \.categorize\.v1\.ClassifyResponse \)/);
    assert.match(out, /rpc ClassifyStream \( stream \.categorize\.v1\.ClassifyRequest \) returns \( stream \.categorize\.v1\.ClassifyStreamResponse \)/);
    assert.match(out, /rpc ClassifyUpload \( stream \.categorize\.v1\.ClassifyUploadRequest \) returns \( \.categorize\.v1\.ClassifyResponse \)/);
    assert.match(out, /rpc GetResult \( \.categorize\.v1\.GetResultRequest \) returns \( \.categorize\.v1\.ClassifyResponse \)/);
    assert.match(out, /rpc GetQuality \( \.categorize\.v1\.GetQualityRequest \) returns \( \.categorize\.v1\.GetQualityResponse \)/);
    // A type from a dependency file (types.proto) resolves too.
    const labelType = await ok(target, ["describe", "categorize.v1.Label"]);
    assert.match(labelType, /message Label \{[\s\S]*uint32 index = 1;[\s\S]*string name = 2;[\s\S]*float score = 3;/);
  });

  it(`${label}: Classify with a base64 image from stdin (-d @) answers bald eagle`, async () => {
    const target = authority(nodeUrl());
    const r = await invoke(target, "categorize.v1.CategorizeService/Classify", classifyBody("bald_eagle.jpeg", `grpcurl-${label}`));
    const res = JSON.parse(okResult(r, "grpcurl Classify")) as ClassifyJson;
    assert.equal(res.labels.length, 3);
    const top = res.labels[0]!;
    assert.deepEqual({ index: top.index, name: top.name }, { index: 22, name: "bald eagle" });
    assert.ok(top.score >= 0.9 && top.score <= 1, `top score ${top.score}`);
    assert.equal(res.requestId, `grpcurl-${label}`);
    assert.equal(res.sha256, createHash("sha256").update(readImage("bald_eagle.jpeg")).digest("hex"));
    assert.equal(res.model?.name, "mobilenetv2-12-int8");
    assert.deepEqual(res.image && { mime: res.image.mime, width: res.image.width, height: res.image.height }, { mime: "image/jpeg", width: 800, height: 600 });
  });

  it(`${label}: Classify of a text file fails with InvalidArgument and a readable message`, async () => {
    const target = authority(nodeUrl());
    const body = JSON.stringify({ image: Buffer.from("hello, this is not an image\n").toString("base64") });
    const r = await invoke(target, "categorize.v1.CategorizeService/Classify", body);
    // grpcurl exits with 64 + the status code (INVALID_ARGUMENT = 3).
    assert.equal(r.code, 64 + 3, describeRun("grpcurl Classify (text)", r));
    assert.match(r.stderr, /Code: InvalidArgument/);
    assert.match(r.stderr, /Message: .*not a recognised image format/);
  });

  it(`${label}: SubmitFeedback then GetQuality answer the quality figures and the window`, async () => {
    const target = authority(nodeUrl());
    const classified = JSON.parse(okResult(await invoke(target, "categorize.v1.CategorizeService/Classify", classifyBody("bald_eagle.jpeg", `grpcurl-q-${label}`)), "grpcurl Classify")) as ClassifyJson;
    const fb = await invoke(target, "categorize.v1.CategorizeService/SubmitFeedback", JSON.stringify({ sha256: classified.sha256, true_class: 22, source: "test:grpcurl" }));
    assert.deepEqual(JSON.parse(okResult(fb, "grpcurl SubmitFeedback")), { top1Correct: true, predictedClass: 22 });
    const q = JSON.parse(okResult(await invoke(target, "categorize.v1.CategorizeService/GetQuality", '{"top_wrong":3}'), "grpcurl GetQuality")) as {
      accuracy?: number;
      macroF1?: number;
      reviewed?: number;
      windowHours?: number;
      windowStartUnixMs?: string;
      model?: { name?: string };
    };
    assert.ok((q.reviewed ?? 0) >= 1, JSON.stringify(q));
    assert.ok(typeof q.accuracy === "number" && q.accuracy > 0 && q.accuracy <= 1, JSON.stringify(q));
    assert.equal(q.windowHours, 168);
    assert.ok(Math.abs(Number(q.windowStartUnixMs) - (Date.now() - 168 * 3_600_000)) < 60_000);
    assert.equal(q.model?.name, "mobilenetv2-12-int8");
  });

  it(`${label}: grpc.health.v1.Health/Check through reflection answers SERVING`, async () => {
    const target = authority(nodeUrl());
    const r = await invoke(target, "grpc.health.v1.Health/Check", '{"service":""}');
    assert.deepEqual(JSON.parse(okResult(r, "grpcurl Health/Check")), { status: "SERVING" });
    const named = await invoke(target, "grpc.health.v1.Health/Check", '{"service":"categorize.v1.CategorizeService"}');
    assert.deepEqual(JSON.parse(okResult(named, "grpcurl Health/Check (named)")), { status: "SERVING" });
  });
}

describe("grpcurl through server reflection", { skip: grpcurl.skip, timeout: 240_000 }, () => {
  after(() => killChildren());

  describe("against an embedded node (edge + core in one process)", () => {
    let node: RunningNode | undefined;
    before(async () => {
      grpcurl.require();
      node = await startTestNode("all");
    });
    after(async () => {
      await node?.stop();
    });
    const url = () => node!.url;

    it("embedded: list shows CategorizeService and InferenceService", async () => {
      const services = await list(authority(url()));
      assert.ok(services.includes("categorize.v1.CategorizeService"), services.join(", "));
      assert.ok(services.includes("categorize.v1.InferenceService"), services.join(", "));
    });

    it("embedded: list lists grpc.health.v1.Health like other gRPC servers", async () => {
      const services = await list(authority(url()));
      assert.ok(services.includes("grpc.health.v1.Health"), services.join(", "));
    });

    categorizeChecks(url, "embedded");
  });

  describe("against a separate edge and core (two `categorize serve` processes)", () => {
    let core: NodeProcess | undefined;
    let edge: NodeProcess | undefined;
    before(async () => {
      grpcurl.require();
      // spawnNode finds the URL in the "node listening" log line: both log at info (its default).
      core = await spawnNode("core");
      edge = await spawnNode("edge", { CORE_URLS: core.url });
    });
    after(async () => {
      await stopSpawned(edge);
      await stopSpawned(core);
      // A node whose start failed is not in core/edge: kill what is left of it.
      killStrayNodes();
    });
    const edgeUrl = () => edge!.url;

    it("edge: list shows CategorizeService only", async () => {
      const services = await list(authority(edgeUrl()));
      assert.ok(services.includes("categorize.v1.CategorizeService"), services.join(", "));
      assert.ok(!services.includes("categorize.v1.InferenceService"), `an edge does not serve inference: ${services.join(", ")}`);
    });

    it("core: list shows categorize.v1.InferenceService, and describe resolves it", async () => {
      const target = authority(core!.url);
      const services = await list(target);
      assert.ok(services.includes("categorize.v1.InferenceService"), services.join(", "));
      assert.ok(!services.includes("categorize.v1.CategorizeService"), `a core does not serve the public API: ${services.join(", ")}`);
      assert.match(await ok(target, ["describe", "categorize.v1.InferenceService"]), /rpc Infer \( stream \.categorize\.v1\.InferRequest \) returns \( stream \.categorize\.v1\.InferResponse \)/);
    });

    categorizeChecks(edgeUrl, "edge");
  });
});
