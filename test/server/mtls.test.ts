import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { after, before, describe, it } from "node:test";
import { Code, ConnectError } from "@connectrpc/connect";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { startTestNode } from "../support/nodes.js";
import { closeAll } from "../support/teardown.js";

const sh = promisify(execFile);

/** A throwaway CA with a server certificate for 127.0.0.1 and a client certificate, made with openssl. */
async function makeCerts(dir: string): Promise<void> {
  const script = `
    set -e
    cd '${dir}'
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj '/CN=test CA' -keyout ca.key -out ca.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=core' -keyout core.key -out core.csr
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\\nextendedKeyUsage=serverAuth\\n' > core.ext
    openssl x509 -req -in core.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile core.ext -out core.crt
    openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=edge' -keyout edge.key -out edge.csr
    printf 'extendedKeyUsage=clientAuth\\n' > edge.ext
    openssl x509 -req -in edge.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile edge.ext -out edge.crt
  `;
  await sh("bash", ["-c", script]);
}

describe("edge to core over mTLS", () => {
  let dir: string;
  let core: RunningNode;
  let edge: RunningNode;
  let stranger: RunningNode;

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-mtls-"));
    await makeCerts(dir);
    core = await startTestNode("core", { TLS_CERT_FILE: join(dir, "core.crt"), TLS_KEY_FILE: join(dir, "core.key"), TLS_CLIENT_CA_FILE: join(dir, "ca.crt") });
    const coreUrl = `https://127.0.0.1:${core.port}`;
    edge = await startTestNode("edge", { CORE_URLS: coreUrl, CORE_TLS_CA_FILE: join(dir, "ca.crt"), CORE_TLS_CERT_FILE: join(dir, "edge.crt"), CORE_TLS_KEY_FILE: join(dir, "edge.key") });
    // Trusts the core but has no client certificate.
    stranger = await startTestNode("edge", { CORE_URLS: coreUrl, CORE_TLS_CA_FILE: join(dir, "ca.crt") });
  });
  after(() =>
    closeAll(
      () => Promise.all([edge?.stop(), stranger?.stop()]),
      () => core?.stop(),
      () => rm(dir, { recursive: true, force: true }),
    ),
  );

  it("classifies through a core that verifies the edge's client certificate", async () => {
    assert.equal(core.url.startsWith("https://"), true);
    const res = await categorizeClient(edge.url).classify({ image: readImage("bald_eagle.jpeg") });
    assert.equal(res.labels[0]?.index, 22);
  });

  it("keeps an edge without a client certificate out: not ready, UNAVAILABLE", async () => {
    assert.equal(stranger.readiness.isReady(), false);
    assert.equal(stranger.edge!.cores.states()[0]?.state === "ready", false);
    const code = await categorizeClient(stranger.url)
      .classify({ image: readImage("bald_eagle.jpeg") })
      .then(() => "OK", (e: unknown) => Code[ConnectError.from(e).code]);
    assert.equal(code, "Unavailable");
  });
});
