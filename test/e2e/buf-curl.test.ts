import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { existsSync } from "node:fs";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { readImage } from "../support/fixtures.js";
import { repoRoot, startTestNode } from "../support/nodes.js";
import { describeRun, killChildren, requiredTool, run, type RunResult } from "./support/tools.js";

// `npx buf` runs node_modules/.bin/buf (the @bufbuild/buf devDependency); the test runs that
// same binary directly so the time limit kills buf itself by its pid, not an npx wrapper.
const bufPath = join(repoRoot, "node_modules", ".bin", "buf");
const buf = requiredTool("buf", existsSync(bufPath) ? bufPath : undefined, "a devDependency: run npm ci");


interface ClassifyJson {
  sha256: string;
  labels: { index: number; name: string; score: number }[];
  model?: { name: string };
  requestId: string;
  image?: { mime: string; sizeBytes: string; width: number; height: number };
}

/** buf curl through server reflection (its default without --schema); h2c because reflection over plain http needs it. */
function bufCurl(url: string, protocol: "connect" | "grpcweb" | "grpc", body: string | undefined, extra: readonly string[] = []): Promise<RunResult> {
  const args = ["curl", "--http2-prior-knowledge", "--protocol", protocol, "--connect-timeout", "10", ...extra];
  if (body !== undefined) args.push("-d", "@-");
  args.push(url);
  return run(buf.require(), args, { timeoutMs: 45_000, ...(body === undefined ? {} : { input: body }) });
}

function okJson<T>(r: RunResult, what: string): T {
  assert.equal(r.code, 0, describeRun(what, r));
  return JSON.parse(r.stdout) as T;
}

describe("buf curl (Connect and gRPC-Web protocols, schema from reflection)", { skip: buf.skip, timeout: 180_000 }, () => {
  let node: RunningNode | undefined;
  const eagle = readImage("bald_eagle.jpeg");
  const eagleSha = createHash("sha256").update(eagle).digest("hex");

  before(async () => {
    buf.require();
    node = await startTestNode("all");
  });
  after(async () => {
    killChildren();
    await node?.stop();
  });
  const classifyUrl = () => `${node!.url}/categorize.v1.CategorizeService/Classify`;

  it("lists the node's methods through reflection", async () => {
    const r = await bufCurl(node!.url, "grpc", undefined, ["--list-methods"]);
    assert.equal(r.code, 0, describeRun("buf curl --list-methods", r));
    const methods = r.stdout.split("\n").filter((l) => l !== "");
    for (const m of ["Classify", "ClassifyStream", "ClassifyUpload", "GetResult", "GetQuality"]) assert.ok(methods.includes(`categorize.v1.CategorizeService/${m}`), methods.join(", "));
  });

  for (const protocol of ["connect", "grpcweb"] as const) {
    it(`--protocol ${protocol}: Classify with a JSON body carrying a base64 image`, async () => {
      const body = JSON.stringify({ image: eagle.toString("base64"), topK: 2, requestId: `buf-${protocol}` });
      const res = okJson<ClassifyJson>(await bufCurl(classifyUrl(), protocol, body), `buf curl --protocol ${protocol} Classify`);
      assert.equal(res.sha256, eagleSha);
      assert.equal(res.requestId, `buf-${protocol}`);
      assert.equal(res.labels.length, 2);
      assert.deepEqual({ index: res.labels[0]!.index, name: res.labels[0]!.name }, { index: 22, name: "bald eagle" });
      assert.ok(res.labels[0]!.score >= 0.9, `top score ${res.labels[0]!.score}`);
      assert.ok(res.labels[0]!.score >= res.labels[1]!.score);
      assert.equal(res.model?.name, "mobilenetv2-12-int8");
      // 64-bit integers are strings in the JSON mapping.
      const { mime, sizeBytes, width, height } = res.image ?? {};
      assert.deepEqual({ mime, sizeBytes, width, height }, { mime: "image/jpeg", sizeBytes: String(eagle.length), width: 800, height: 600 });
    });

    it(`--protocol ${protocol}: a text file is answered with invalid_argument and a readable message`, async () => {
      const body = JSON.stringify({ image: Buffer.from("this is a text file\n").toString("base64") });
      const r = await bufCurl(classifyUrl(), protocol, body);
      assert.notEqual(r.code, 0, describeRun(`buf curl --protocol ${protocol} Classify (text)`, r));
      assert.equal(r.timedOut, false);
      const err = JSON.parse(r.stderr) as { code: string; message: string };
      assert.equal(err.code, "invalid_argument");
      assert.match(err.message, /not a recognised image format/);
    });
  }

  it("--protocol connect: GetQuality after a SubmitFeedback answers the figures the core computes", async () => {
    const base = `${node!.url}/categorize.v1.CategorizeService`;
    okJson<ClassifyJson>(await bufCurl(`${base}/Classify`, "connect", JSON.stringify({ image: eagle.toString("base64") })), "buf curl Classify");
    const fb = okJson<{ top1Correct?: boolean }>(await bufCurl(`${base}/SubmitFeedback`, "connect", JSON.stringify({ sha256: eagleSha, trueClass: 22, source: "test:buf-curl" })), "buf curl SubmitFeedback");
    assert.equal(fb.top1Correct, true);
    const q = okJson<{ accuracy?: number; reviewed?: number; windowHours?: number }>(await bufCurl(`${base}/GetQuality`, "connect", "{}"), "buf curl GetQuality");
    const expected = await node!.core!.feedback.quality();
    assert.deepEqual({ accuracy: q.accuracy, reviewed: q.reviewed, windowHours: q.windowHours }, { accuracy: expected.accuracy, reviewed: expected.samples, windowHours: 168 });
  });

  it("grpc.health.v1.Health/Check through reflection answers SERVING", async () => {
    const r = await bufCurl(`${node!.url}/grpc.health.v1.Health/Check`, "connect", '{"service":""}');
    assert.deepEqual(okJson(r, "buf curl Health/Check"), { status: "SERVING" });
  });
});
