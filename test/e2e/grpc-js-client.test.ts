import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { once } from "node:events";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import type { RunningNode } from "../../cli/start-node.js";
import { imageNames, readExpectations, readImage } from "../support/fixtures.js";
import { makeVariants } from "../support/image-variants.js";
import { repoRoot, startTestNode } from "../support/nodes.js";

// "A gRPC client in another service": no generated code from this repo, only the
// committed .proto files loaded at run time by @grpc/proto-loader, the way a
// team consuming our contract would do it.

interface ClassifyRequestMsg {
  image: Buffer;
  top_k: number;
  request_id: string;
}
interface LabelMsg {
  index: number;
  name: string;
  score: number;
}
interface ClassifyResponseMsg {
  sha256: string;
  labels: LabelMsg[];
  model: { name: string; version: string; sha256: string } | null;
  cached: boolean;
  request_id: string;
}
interface ItemErrorMsg {
  code: number;
  message: string;
  retryable: boolean;
}
interface ClassifyStreamResponseMsg {
  request_id: string;
  outcome?: "result" | "error";
  result: ClassifyResponseMsg | null;
  error: ItemErrorMsg | null;
}
interface CategorizeServiceClient extends grpc.Client {
  ClassifyStream(options?: grpc.CallOptions): grpc.ClientDuplexStream<ClassifyRequestMsg, ClassifyStreamResponseMsg>;
}

function loadClientConstructor(): new (address: string, credentials: grpc.ChannelCredentials) => CategorizeServiceClient {
  const definition = protoLoader.loadSync("categorize/v1/categorize.proto", {
    includeDirs: [join(repoRoot, "proto")],
    keepCase: true,
    longs: String,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const root = grpc.loadPackageDefinition(definition);
  const ctor = ((root.categorize as grpc.GrpcObject | undefined)?.v1 as grpc.GrpcObject | undefined)?.CategorizeService as grpc.ServiceClientConstructor | undefined;
  assert.ok(ctor !== undefined && typeof ctor === "function", "proto/categorize/v1/categorize.proto declares categorize.v1.CategorizeService");
  return ctor as unknown as new (address: string, credentials: grpc.ChannelCredentials) => CategorizeServiceClient;
}

interface Item {
  readonly requestId: string;
  readonly image: Buffer;
}

/** Sends every item over one ClassifyStream (honouring write backpressure) and collects every answer. */
async function classifyStream(client: CategorizeServiceClient, items: readonly Item[], timeoutMs = 60_000): Promise<{ answers: ClassifyStreamResponseMsg[]; status: grpc.StatusObject }> {
  const call = client.ClassifyStream({ deadline: Date.now() + timeoutMs });
  const answers: ClassifyStreamResponseMsg[] = [];
  call.on("data", (msg: ClassifyStreamResponseMsg) => answers.push(msg));
  const status = new Promise<grpc.StatusObject>((resolve, reject) => {
    call.on("status", resolve);
    // The stream also emits the non-OK status as an error; the status event still follows.
    call.on("error", (err: grpc.ServiceError) => {
      if (typeof err.code !== "number") reject(err);
    });
  });
  for (const item of items) {
    if (!call.write({ image: item.image, top_k: 5, request_id: item.requestId })) await once(call, "drain");
  }
  call.end();
  return { answers, status: await status };
}

function sha256(b: Buffer): string {
  return createHash("sha256").update(b).digest("hex");
}

describe("a gRPC client in another service (@grpc/grpc-js + @grpc/proto-loader, committed protos)", { timeout: 180_000 }, () => {
  let node: RunningNode | undefined;
  let client: CategorizeServiceClient | undefined;

  before(async () => {
    node = await startTestNode("all");
    const Client = loadClientConstructor();
    client = new Client(new URL(node.url).host, grpc.credentials.createInsecure());
  });
  after(async () => {
    client?.close();
    await node?.stop();
  });

  it("classifies the whole shared images folder over one ClassifyStream, every answer within expected.tsv", async () => {
    const names = imageNames();
    const expectations = new Map(readExpectations().map((e) => [e.file, e]));
    assert.ok(names.length >= 7, `images found: ${names.join(", ")}`);
    for (const n of names) assert.ok(expectations.has(n), `${n} has a row in images/expected.tsv`);
    const items: Item[] = names.map((n, i) => ({ requestId: `svc-${i}-${n}`, image: readImage(n) }));
    // One item that is not an image: its error comes back in the stream, which goes on.
    items.push({ requestId: "svc-not-an-image", image: Buffer.from("plain text, not an image\n") });

    const { answers, status } = await classifyStream(client!, items);
    assert.equal(status.code, grpc.status.OK, `stream status ${status.code}: ${status.details}`);

    const byId = new Map<string, ClassifyStreamResponseMsg>();
    for (const a of answers) {
      assert.ok(!byId.has(a.request_id), `one answer per request id (${a.request_id} twice)`);
      byId.set(a.request_id, a);
    }
    assert.deepEqual([...byId.keys()].sort(), items.map((i) => i.requestId).sort(), "every request id answered, none invented");

    for (const [i, name] of names.entries()) {
      const item = items[i]!;
      const exp = expectations.get(name)!;
      const answer = byId.get(item.requestId)!;
      assert.equal(answer.outcome, "result", `${name}: ${JSON.stringify(answer.error)}`);
      const res = answer.result!;
      // Correlation is by id, so the answer must be about the very bytes sent under that id.
      assert.equal(res.sha256, sha256(item.image), `${name}: answer for the image sent as ${item.requestId}`);
      assert.equal(res.request_id, item.requestId);
      assert.equal(res.model?.name, "mobilenetv2-12-int8");
      assert.equal(res.labels.length, 5, name);
      for (let k = 1; k < res.labels.length; k++) assert.ok(res.labels[k - 1]!.score >= res.labels[k]!.score, `${name}: labels sorted by score`);
      const top = res.labels[0]!;
      assert.ok(top.name !== "", `${name}: labels carry names`);
      if (exp.acceptTop1 !== undefined) assert.ok(exp.acceptTop1.includes(top.index), `${name}: top-1 ${top.index} ${top.name} not in ${exp.acceptTop1.join("|")}`);
      if (exp.acceptInTop5 !== undefined) assert.ok(res.labels.some((l) => exp.acceptInTop5!.includes(l.index)), `${name}: none of ${exp.acceptInTop5.join("|")} in top-5 ${res.labels.map((l) => l.index).join(",")}`);
      if (exp.minTop1Prob !== undefined) assert.ok(top.score >= exp.minTop1Prob, `${name}: top-1 probability ${top.score} < ${exp.minTop1Prob}`);
    }

    const bad = byId.get("svc-not-an-image")!;
    assert.equal(bad.outcome, "error");
    assert.equal(bad.error?.code, grpc.status.INVALID_ARGUMENT);
    assert.match(bad.error?.message ?? "", /not a recognised image format/);
    assert.equal(bad.error?.retryable, false);
  });

  it("keeps request ids and answers matched over a stream longer than the server's read-ahead window", async () => {
    // 48 distinct images (STREAM_WINDOW defaults to 16): answers may come in any order.
    const images = await makeVariants(48, { width: 320 });
    const items: Item[] = images.map((image, i) => ({ requestId: `bulk-${String(i).padStart(2, "0")}`, image }));
    const { answers, status } = await classifyStream(client!, items, 120_000);
    assert.equal(status.code, grpc.status.OK, `stream status ${status.code}: ${status.details}`);
    assert.equal(answers.length, items.length);
    const sent = new Map(items.map((i) => [i.requestId, sha256(i.image)]));
    for (const a of answers) {
      assert.equal(a.outcome, "result", `${a.request_id}: ${JSON.stringify(a.error)}`);
      assert.equal(a.result!.sha256, sent.get(a.request_id), `${a.request_id} answers the image sent under that id`);
      sent.delete(a.request_id);
    }
    assert.equal(sent.size, 0, `unanswered: ${[...sent.keys()].join(", ")}`);
  });
});
