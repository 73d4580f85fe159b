import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcTransport } from "@connectrpc/connect-node";
import { SignJWT, exportSPKI, generateKeyPair } from "jose";
import { CategorizeService } from "../../gen/categorize/v1/categorize_pb.js";
import { Health } from "../../gen/grpc/health/v1/health_pb.js";
import { InferRequestSchema, InferenceService } from "../../gen/categorize/v1/inference_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { hashApiKey } from "../../common/server/access-control.js";
import { readImage } from "../support/fixtures.js";
import { captureLogs, startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

const KEYS = {
  classify: "ck_test_classify_0123456789",
  reader: "ck_test_reader_0123456789",
  admin: "ck_test_admin_0123456789",
  tenantA: "ck_test_tenant_a_0123456789",
  tenantB: "ck_test_tenant_b_0123456789",
};
const ALL = "classify|read-results|feedback|delete";
// Both forms: name:tenant:sha256:scopes, and name:sha256:scopes (the key's name is its tenant).
const apiKeys = [
  `classifier:team-a:${hashApiKey(KEYS.classify)}:classify`,
  `reader:team-a:${hashApiKey(KEYS.reader)}:read-results`,
  `ops:team-a:${hashApiKey(KEYS.admin)}:admin`,
  `svc-a:tenant-a:${hashApiKey(KEYS.tenantA)}:${ALL}`,
  `tenant-b:${hashApiKey(KEYS.tenantB)}:${ALL}`,
].join(",");

function client(url: string, token?: string) {
  return createClient(
    CategorizeService,
    createGrpcTransport({
      baseUrl: url,
      interceptors: token === undefined ? [] : [(next) => (req) => (req.header.set("authorization", `Bearer ${token}`), next(req))],
    }),
  );
}
const codeOf = (p: Promise<unknown>) => p.then(() => "OK", (e: unknown) => Code[ConnectError.from(e).code]);

describe("access control", () => {
  let dir: string;
  let core: RunningNode;
  let edge: RunningNode;
  let signer: CryptoKey;
  const logs = captureLogs();
  const eagle = readImage("bald_eagle.jpeg");

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-auth-"));
    const pair = await generateKeyPair("RS256");
    signer = pair.privateKey;
    await writeFile(join(dir, "jwt.pem"), await exportSPKI(pair.publicKey));
    core = await startTestNode("core", { CORE_SHARED_SECRET: "s3cret-edge-core-0123456789" });
    edge = await startTestNode(
      "edge",
      {
        CORE_URLS: core.url,
        CORE_SHARED_SECRET: "s3cret-edge-core-0123456789",
        API_KEYS: apiKeys,
        JWT_KEY_FILE: join(dir, "jwt.pem"),
        JWT_ISSUER: "https://issuer.test",
        JWT_AUDIENCE: "categorize",
        RATE_LIMIT_RPS: "1000",
        CORS_ORIGINS: "https://app.example",
        LOG_LEVEL: "info",
      },
      logs.stream,
    );
  });
  after(() =>
    closeAll(
      () => edge?.stop(),
      () => core?.stop(),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  it("refuses calls without valid credentials with UNAUTHENTICATED", async () => {
    assert.equal(await codeOf(client(edge.url).classify({ image: eagle })), "Unauthenticated");
    assert.equal(await codeOf(client(edge.url, "not-a-key").classify({ image: eagle })), "Unauthenticated");
  });

  it("authorizes per method by scope: PERMISSION_DENIED without it", async () => {
    const res = await client(edge.url, KEYS.classify).classify({ image: eagle });
    assert.equal(res.labels[0]!.index, 22);
    assert.equal(await codeOf(client(edge.url, KEYS.classify).getResult({ sha256: res.sha256 })), "PermissionDenied");
    assert.equal(await codeOf(client(edge.url, KEYS.reader).getResult({ sha256: res.sha256 })), "OK");
    // ListCategories is a read RPC like GetResult.
    assert.equal(await codeOf(client(edge.url).listCategories({})), "Unauthenticated");
    assert.equal(await codeOf(client(edge.url, KEYS.classify).listCategories({})), "PermissionDenied");
    assert.equal(await codeOf(client(edge.url, KEYS.reader).listCategories({})), "OK");
    assert.equal(await codeOf(client(edge.url, KEYS.reader).classify({ image: eagle })), "PermissionDenied");
    assert.equal(await codeOf(client(edge.url, KEYS.admin).submitFeedback({ sha256: res.sha256, trueClass: 22 })), "OK");
    // GetQuality reads stored data: the read-results scope, as GetResult.
    assert.equal(await codeOf(client(edge.url).getQuality({})), "Unauthenticated");
    assert.equal(await codeOf(client(edge.url, KEYS.classify).getQuality({})), "PermissionDenied");
    assert.equal(await codeOf(client(edge.url, KEYS.reader).getQuality({})), "OK");
    assert.equal(await codeOf(client(edge.url, KEYS.admin).getQuality({})), "OK");
    assert.equal(await codeOf(client(edge.url, KEYS.reader).deleteImage({ sha256: res.sha256 })), "PermissionDenied", "DeleteImage needs the delete scope");
  });

  it("keeps two tenants apart on every RPC: nothing one sent is visible to the other", async () => {
    const a = client(edge.url, KEYS.tenantA);
    const b = client(edge.url, KEYS.tenantB);
    const rocket = readImage("rocket.jpg");
    const flower = readImage("flower.jpg");
    const msg = (p: Promise<unknown>) => p.then(() => "OK", (e: unknown) => `${Code[ConnectError.from(e).code]}: ${ConnectError.from(e).rawMessage}`);
    // Shared compute, private knowledge: one stored answer, each tenant's first call is not cached.
    const a1 = await a.classify({ image: rocket });
    assert.equal(a1.cached, false);
    assert.equal((await a.classify({ image: rocket })).cached, true, "A's repeat");
    const b1 = await b.classify({ image: rocket });
    assert.equal(b1.cached, false, "B never sent it: not cached for B although A's answer is stored");
    assert.deepEqual(b1.labels, a1.labels);
    assert.equal((await b.classify({ image: rocket })).cached, true);

    // An image only A sent: B gets exactly what it gets for a hash nobody sent.
    const x = (await a.classify({ image: flower })).sha256;
    const unknown = "0".repeat(64);
    const same = (got: string, ref: string) => assert.equal(got.replace(x, "<sha>"), ref.replace(unknown, "<sha>"));
    same(await msg(b.getResult({ sha256: x })), await msg(b.getResult({ sha256: unknown })));
    same(await msg(b.submitFeedback({ sha256: x, trueClass: 1 })), await msg(b.submitFeedback({ sha256: unknown, trueClass: 1 })));
    same(await msg(b.deleteImage({ sha256: x })), await msg(b.deleteImage({ sha256: unknown })));
    assert.match(await msg(b.getResult({ sha256: x })), /^NotFound/);
    assert.equal(await codeOf(a.getResult({ sha256: x })), "OK");
    assert.equal(await codeOf(a.submitFeedback({ sha256: x, trueClass: 985 })), "OK");
    // Quality is per tenant too: A sees its one review, B none; an admin sees everyone's, each tenant labelled.
    const qa = await a.getQuality({});
    assert.notEqual(qa.tenant, "");
    assert.equal(qa.reviewed, 1);
    const qb = await b.getQuality({});
    assert.equal(qb.reviewed, 0);
    assert.notEqual(qb.tenant, qa.tenant);
    const all = await client(edge.url, KEYS.admin).getQuality({});
    assert.equal(all.tenant, "");
    assert.equal(all.tenants.find((t) => t.tenant === qa.tenant)?.reviewed, 1);
    assert.equal(all.tenants.some((t) => t.tenant === qb.tenant), false);
    // Upload and stream: the same per-tenant cached flag.
    async function* chunks() {
      yield { chunk: flower.subarray(0, 1000) };
      yield { chunk: flower.subarray(1000) };
    }
    assert.equal((await b.classifyUpload(chunks())).cached, false, "B's first upload of A's image");
    async function* items() {
      yield { image: flower, requestId: "s1" };
    }
    for await (const r of a.classifyStream(items())) assert.equal(r.outcome.case === "result" && r.outcome.value.cached, true);

    // Erasure: A's reference goes, B's answer stays; A's next call is a first call again.
    assert.equal(await codeOf(a.deleteImage({ sha256: a1.sha256 })), "OK");
    assert.equal(await codeOf(a.getResult({ sha256: a1.sha256 })), "NotFound", "NOT_FOUND right after the delete, cache included");
    assert.equal(await codeOf(a.submitFeedback({ sha256: a1.sha256, trueClass: 1 })), "NotFound");
    assert.equal(await codeOf(b.getResult({ sha256: a1.sha256 })), "OK", "B's answer is untouched");
    assert.equal(await codeOf(a.deleteImage({ sha256: a1.sha256 })), "NotFound", "a second delete finds nothing");
    assert.equal((await a.classify({ image: rocket })).cached, false);

    // Async: 'already classified' is per tenant as well.
    const china = readImage("china.jpg");
    await a.classify({ image: china });
    assert.equal((await a.classifyAsync({ image: china })).alreadyClassified, true);
    assert.equal((await b.classifyAsync({ image: china })).alreadyClassified, false);
    const bulk = await b.classifyAsyncBulk({ items: [{ image: rocket }] });
    assert.equal(bulk.items[0]?.outcome.case === "accepted" && bulk.items[0].outcome.value.alreadyClassified, true, "B sent the rocket itself");
  });

  it("accepts JWTs signed by the configured key with the right issuer, audience and scope", async () => {
    const jwt = (claims: Record<string, unknown>, opts: { iss?: string; exp?: string } = {}) =>
      new SignJWT(claims).setProtectedHeader({ alg: "RS256" }).setSubject("svc-a").setIssuer(opts.iss ?? "https://issuer.test").setAudience("categorize").setIssuedAt().setExpirationTime(opts.exp ?? "5m").sign(signer);
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "classify", tenant: "team-a" })).classify({ image: eagle })), "OK");
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "classify" })).classify({ image: eagle })), "Unauthenticated", "a token without a tenant");
    // The tenant comes from the claim: a JWT of tenant-a reads what tenant-a's key sent, tenant-b's does not.
    const sent = await client(edge.url, KEYS.tenantA).classify({ image: readImage("astronaut.png") });
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "read-results", tenant: "tenant-a" })).getResult({ sha256: sent.sha256 })), "OK");
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "read-results", tenant: "tenant-b" })).getResult({ sha256: sent.sha256 })), "NotFound");
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "feedback", tenant: "team-a" })).classify({ image: eagle })), "PermissionDenied");
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "classify", tenant: "team-a" }, { iss: "https://evil.test" })).classify({ image: eagle })), "Unauthenticated");
    assert.equal(await codeOf(client(edge.url, await jwt({ scope: "classify", tenant: "team-a" }, { exp: "-1m" })).classify({ image: eagle })), "Unauthenticated");
  });

  it("keeps health and reflection reachable without credentials", async () => {
    const health = createClient(Health, createGrpcTransport({ baseUrl: edge.url }));
    assert.equal((await health.check({})).status, 1);
    assert.equal((await fetch(`${edge.url}/healthz`)).status, 200);
  });

  it("keeps the internal InferenceService closed to callers without the edge secret", async () => {
    const direct = createClient(InferenceService, createGrpcTransport({ baseUrl: core.url }));
    assert.equal(await codeOf(direct.getModelInfo({})), "Unauthenticated");
    async function* one() {
      yield create(InferRequestSchema, { id: "x", sha256: "a".repeat(64) });
    }
    const stream = (async () => {
      for await (const _ of direct.infer(one())) void _;
    })();
    assert.equal(await codeOf(stream), "Unauthenticated");
  });

  it("answers CORS preflights only for configured origins", async () => {
    const pre = (origin: string) =>
      fetch(`${edge.url}/categorize.v1.CategorizeService/Classify`, {
        method: "OPTIONS",
        headers: { origin, "access-control-request-method": "POST", "access-control-request-headers": "content-type,authorization,connect-protocol-version" },
      });
    const ok = await pre("https://app.example");
    assert.equal(ok.status, 204);
    assert.equal(ok.headers.get("access-control-allow-origin"), "https://app.example");
    assert.match(ok.headers.get("access-control-allow-headers") ?? "", /authorization/i);
    assert.equal((await pre("https://evil.example")).status, 403);
  });

  it("serves /metrics on the public port only to callers with the admin scope", async () => {
    const get = (token?: string) => fetch(`${edge.url}/metrics`, token === undefined ? {} : { headers: { authorization: `Bearer ${token}` } });
    const anonymous = await get();
    assert.equal(anonymous.status, 401);
    assert.match(anonymous.headers.get("www-authenticate") ?? "", /^Bearer/);
    assert.equal((await get("not-a-key")).status, 401);
    assert.equal((await get(KEYS.classify)).status, 403);
    const ops = await get(KEYS.admin);
    assert.equal(ops.status, 200);
    assert.match(await ops.text(), /categorize_rpc_requests_total\{/);
  });

  it("shows readiness details (hosts, errors) on the public port only to operators", async () => {
    const anonymous = await fetch(`${edge.url}/readyz`);
    assert.equal(anonymous.status, 200);
    assert.deepEqual(Object.keys((await anonymous.json()) as object).sort(), ["draining", "ready"]);
    const ops = (await (await fetch(`${edge.url}/readyz`, { headers: { authorization: `Bearer ${KEYS.admin}` } })).json()) as { checks?: Record<string, unknown> };
    assert.ok(ops.checks?.core !== undefined, JSON.stringify(ops));
  });

  it("never logs an API key or a token", () => {
    const text = JSON.stringify(logs.lines());
    for (const key of Object.values(KEYS)) assert.equal(text.includes(key), false);
    assert.equal(text.includes("not-a-key"), false);
  });
});

describe("rate and concurrency limits", () => {
  let node: RunningNode;
  before(async () => {
    node = await startTestNode("all", { API_KEYS: apiKeys, RATE_LIMIT_RPS: "1", RATE_LIMIT_BURST: "2" });
  });
  after(async () => {
    await node.stop();
  });

  it("answers RESOURCE_EXHAUSTED with retry information beyond the caller's budget, per caller", async () => {
    const c = client(node.url, KEYS.classify);
    const image = readImage("coffee.png");
    assert.equal(await codeOf(c.classify({ image })), "OK");
    assert.equal(await codeOf(c.classify({ image })), "OK");
    try {
      await c.classify({ image });
      assert.fail("expected RESOURCE_EXHAUSTED");
    } catch (err) {
      const e = ConnectError.from(err);
      assert.equal(e.code, Code.ResourceExhausted);
      assert.match(e.rawMessage, /retry in \d+ ms/);
      assert.ok(Number(e.metadata.get("retry-after-ms")) > 0);
    }
    // Another caller has its own budget.
    assert.equal(await codeOf(client(node.url, KEYS.admin).classify({ image })), "OK");
  });
});

describe("admin port", () => {
  let node: RunningNode;
  before(async () => {
    node = await startTestNode("all", { API_KEYS: apiKeys, ADMIN_PORT: "0" });
  });
  after(async () => {
    await node.stop();
  });

  it("moves /readyz and /metrics off the public port, which keeps only /healthz", async () => {
    assert.equal((await fetch(`${node.url}/metrics`, { headers: { authorization: `Bearer ${KEYS.admin}` } })).status, 404);
    assert.equal((await fetch(`${node.url}/readyz`)).status, 404);
    assert.equal((await fetch(`${node.url}/healthz`)).status, 200);
  });

  it("serves probes and scrapes on the admin port without credentials, and no RPC there", async () => {
    assert.ok(node.adminUrl !== undefined);
    assert.notEqual(node.adminUrl, node.url);
    const ready = await fetch(`${node.adminUrl}/readyz`);
    assert.equal(ready.status, 200);
    assert.ok(((await ready.json()) as { checks: Record<string, unknown> }).checks.model !== undefined);
    const metrics = await fetch(`${node.adminUrl}/metrics`);
    assert.equal(metrics.status, 200);
    assert.match(await metrics.text(), /^categorize_ready(\{[^}]*\})? 1$/m);
    assert.equal((await fetch(`${node.adminUrl}/healthz`)).status, 200);
    const rpc = await fetch(`${node.adminUrl}/categorize.v1.CategorizeService/Classify`, { method: "POST", headers: { "content-type": "application/json", authorization: `Bearer ${KEYS.admin}` }, body: "{}" });
    assert.equal(rpc.status, 404);
  });
});

describe("operator data on a node without operator credentials", () => {
  let core: RunningNode;
  before(async () => {
    // A core as on a pod network: reachable beyond loopback, edges authenticated by the shared secret only.
    core = await startTestNode("core", { HOST: "0.0.0.0", CORE_SHARED_SECRET: "s3cret-edge-core-0123456789" });
  });
  after(async () => {
    await core.stop();
  });

  it("refuses /metrics and readiness details on the public port and says where to read them", async () => {
    const metrics = await fetch(`${core.url}/metrics`);
    assert.equal(metrics.status, 403);
    assert.match(((await metrics.json()) as { error: string }).error, /ADMIN_PORT/);
    const ready = await fetch(`${core.url}/readyz`);
    assert.equal(ready.status, 200);
    assert.deepEqual(Object.keys((await ready.json()) as object).sort(), ["draining", "ready"]);
    assert.equal((await fetch(`${core.url}/healthz`)).status, 200);
  });
});
