/**
 * Static checks of the deployment artifacts with the real tools:
 *   - Kubernetes: infra/k8s/validate.sh (kustomize build + kubeconform -strict,
 *     CRD validators for the operator examples), plus copies with deliberate
 *     errors that it must reject;
 *   - Compose: infra/validate-compose.sh (docker compose config -q + policy);
 *   - Dockerfiles: infra/docker/lint.sh (hadolint);
 *   - nginx: infra/nginx/check.sh (nginx -t on the rendered template), and the
 *     rendered config actually routing gRPC vs HTTP/1.1 on 127.0.0.1.
 *
 * Run: node --import tsx --test test/infra/static-artifacts.test.ts
 *
 * Each tool is installed by its script (`<script> install`). A test skips when
 * its tool is missing ONLY outside CI; with CI set it runs (and the script
 * installs what is missing, or the test fails).
 */
import assert from "node:assert/strict";
import { createClient } from "@connectrpc/connect";
import { createConnectTransport, createGrpcTransport, createGrpcWebTransport } from "@connectrpc/connect-node";
import { CategorizeService } from "../../gen/categorize/v1/categorize_pb.js";
import type { RunningNode } from "../../cli/start-node.js";
import { sharedDir } from "../support/fixtures.js";
import { startTestNode } from "../support/nodes.js";
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { cp, mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import http from "node:http";
import http2 from "node:http2";
import net, { type AddressInfo } from "node:net";
import tls from "node:tls";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { after, before, describe, it, type TestContext } from "node:test";
import { fileURLToPath } from "node:url";

const repo = resolve(dirname(fileURLToPath(import.meta.url)), "..", "..");
const scripts = {
  k8s: join(repo, "infra/k8s/validate.sh"),
  compose: join(repo, "infra/validate-compose.sh"),
  docker: join(repo, "infra/docker/lint.sh"),
  nginx: join(repo, "infra/nginx/check.sh"),
  nginxRender: join(repo, "infra/nginx/render.sh"),
} as const;
const inCi = Boolean(process.env.CI);
const INSTALL_TIMEOUT_MS = 20 * 60_000; // first run in CI may build Go tools

interface RunResult {
  readonly code: number;
  readonly output: string;
}

/** Runs a command, never throws on a non-zero exit; stdout and stderr together. */
function run(file: string, args: readonly string[], env: NodeJS.ProcessEnv = {}, timeoutMs = INSTALL_TIMEOUT_MS): Promise<RunResult> {
  return new Promise((resolvePromise) => {
    execFile(
      file,
      [...args],
      { cwd: repo, env: { ...process.env, ...env }, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        const code = err === null ? 0 : typeof err.code === "number" ? err.code : 1;
        resolvePromise({ code, output: `${stdout}${stderr}` });
      },
    );
  });
}

/**
 * Skips the test (outside CI only) when the script reports its tools missing.
 * Returns true when the test should go on.
 */
async function requireTools(t: TestContext, script: string, what: string): Promise<boolean> {
  const ready = await run(script, ["--tools-ready"], {}, 60_000);
  if (ready.code === 0) return true;
  if (inCi) return true; // must run in CI: the script installs what is missing
  t.skip(`${what} not installed (run: ${script.slice(repo.length + 1)} install); CI is not set`);
  return false;
}

async function replaceInFile(path: string, search: string, replacement: string): Promise<void> {
  const text = await readFile(path, "utf8");
  assert.ok(text.includes(search), `${path} should contain ${JSON.stringify(search)}`);
  await writeFile(path, text.replace(search, replacement));
}

const freePort = async (): Promise<number> => {
  const srv = net.createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const { port } = srv.address() as AddressInfo;
  srv.close();
  await once(srv, "close");
  return port;
};

describe("Kubernetes manifests (infra/k8s)", () => {
  it("every overlay renders and validates with kubeconform -strict; operator CRs validate", { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
    if (!(await requireTools(t, scripts.k8s, "kubeconform/kustomize/schemas"))) return;
    const r = await run(scripts.k8s, []);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /kubeconform -strict .*overlays_production\.yaml/);
    assert.match(r.output, /kubeconform -strict .*overlays_local\.yaml/);
    assert.match(r.output, /CRD summary: Valid: [1-9]\d*, Invalid: 0/);
    assert.doesNotMatch(r.output, /Invalid: [1-9]|Errors: [1-9]/);
  });

  describe("the validator rejects broken copies", () => {
    let copy = "";
    before(async () => {
      copy = await mkdtemp(join(tmpdir(), "categorize-k8s-"));
    });
    after(async () => {
      if (copy) await rm(copy, { recursive: true, force: true });
    });
    const validateCopy = (dir: string) => run(scripts.k8s, [], { K8S_DIR: dir, KUBE_VERSIONS: "1.31.0", NO_INSTALL: "1" });

    it("containerPort given as a string", { timeout: 120_000 }, async (t) => {
      if (!(await requireTools(t, scripts.k8s, "kubeconform/kustomize/schemas"))) return;
      const dir = join(copy, "port-string");
      await cp(join(repo, "infra/k8s"), dir, { recursive: true });
      await replaceInFile(join(dir, "base/core.yaml"), "containerPort: 8080", 'containerPort: "8080"');
      const r = await validateCopy(dir);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, /containerPort.*got string, want integer/);
    });

    it("an unknown field in a Deployment", { timeout: 120_000 }, async (t) => {
      if (!(await requireTools(t, scripts.k8s, "kubeconform/kustomize/schemas"))) return;
      const dir = join(copy, "unknown-field");
      await cp(join(repo, "infra/k8s"), dir, { recursive: true });
      await replaceInFile(join(dir, "base/edge.yaml"), "  revisionHistoryLimit: 5\n", "  revisionHistoryLimit: 5\n  replicaCount: 3\n");
      const r = await validateCopy(dir);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, /additional properties 'replicaCount' not allowed/);
    });

    it("a wrong type in an operator custom resource (Strimzi KafkaNodePool)", { timeout: 120_000 }, async (t) => {
      if (!(await requireTools(t, scripts.k8s, "kubeconform/kustomize/schemas"))) return;
      const dir = join(copy, "crd-type");
      await cp(join(repo, "infra/k8s"), dir, { recursive: true });
      await replaceInFile(join(dir, "operators/strimzi-kafka.yaml"), "  replicas: 3\n", '  replicas: "three"\n');
      const r = await validateCopy(dir);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, /KafkaNodePool combined is invalid: .*replicas must be integer/);
    });
  });
});

describe("Compose stack (infra/compose.yaml)", () => {
  it("docker compose config -q passes and the policy holds", { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
    if (!(await requireTools(t, scripts.compose, "docker compose"))) return;
    const r = await run(scripts.compose, []);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /compose policy: \d+ services, 0 problems/);
  });

  it("rejects a schema error and a service without a healthcheck", { timeout: 120_000 }, async (t) => {
    if (!(await requireTools(t, scripts.compose, "docker compose"))) return;
    const dir = await mkdtemp(join(tmpdir(), "categorize-compose-"));
    try {
      await cp(join(repo, "infra/compose.env.example"), join(dir, "compose.env.example"));
      const original = await readFile(join(repo, "infra/compose.yaml"), "utf8");

      const typeError = join(dir, "type-error.yaml");
      await writeFile(typeError, original.replace('      limits:\n        cpus: "1.0"\n        memory: 512M', "      limits:\n        cpus: lots\n        memory: 512M"));
      const r1 = await run(scripts.compose, [typeError], { NO_INSTALL: "1" }, 120_000);
      assert.notEqual(r1.code, 0, r1.output);
      assert.match(r1.output, /limits\.cpus.*parsing "lots"/);

      const noHealth = join(dir, "no-healthcheck.yaml");
      const marker = '      test: ["CMD", "wget", "-q", "-O", "/dev/null", "http://127.0.0.1:9093/-/ready"]\n';
      assert.ok(original.includes(marker));
      await writeFile(noHealth, original.replace(marker, "      disable: true\n"));
      const r2 = await run(scripts.compose, [noHealth], { NO_INSTALL: "1" }, 120_000);
      assert.notEqual(r2.code, 0, r2.output);
      assert.match(r2.output, /alertmanager: no healthcheck/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("Dockerfiles (infra/docker)", () => {
  it("hadolint reports nothing on Dockerfile.edge and Dockerfile.core", { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
    if (!(await requireTools(t, scripts.docker, "hadolint"))) return;
    const r = await run(scripts.docker, []);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /Haskell Dockerfile Linter \d/);
  });

  it("hadolint fails a Dockerfile with an untagged base image and a root user", { timeout: 120_000 }, async (t) => {
    if (!(await requireTools(t, scripts.docker, "hadolint"))) return;
    const dir = await mkdtemp(join(tmpdir(), "categorize-docker-"));
    try {
      const bad = join(dir, "Dockerfile.bad");
      await writeFile(bad, "FROM node\nUSER root\nCMD [\"node\"]\n");
      const r = await run(scripts.docker, [bad], { NO_INSTALL: "1" }, 120_000);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, /DL3006/);
      assert.match(r.output, /DL3002/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });
});

describe("nginx (infra/nginx)", () => {
  it("nginx -t accepts the rendered template with a throwaway certificate", { timeout: INSTALL_TIMEOUT_MS }, async (t) => {
    if (!(await requireTools(t, scripts.nginx, "nginx"))) return;
    const r = await run(scripts.nginx, []);
    assert.equal(r.code, 0, r.output);
    assert.match(r.output, /configuration OK/);
  });

  it("nginx -t rejects a broken template", { timeout: 120_000 }, async (t) => {
    if (!(await requireTools(t, scripts.nginx, "nginx"))) return;
    const dir = await mkdtemp(join(tmpdir(), "categorize-nginx-bad-"));
    try {
      const template = join(dir, "nginx.conf");
      const original = await readFile(join(repo, "infra/nginx/nginx.conf"), "utf8");
      await writeFile(template, original.replace("client_max_body_size 28m;", "client_max_body_size twenty-eight;"));
      const r = await run(scripts.nginx, [], { NGINX_TEMPLATE: template, NO_INSTALL: "1" }, 120_000);
      assert.notEqual(r.code, 0, r.output);
      assert.match(r.output, /client_max_body_size/);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  describe("the rendered config routes traffic on 127.0.0.1", () => {
    let work = "";
    let nginx: ChildProcess | undefined;
    let edgeNode: RunningNode | undefined;
    let httpsPort = 0;
    let httpPort = 0;
    let ca = "";

    before(async () => {
      if ((await run(scripts.nginx, ["--tools-ready"], {}, 60_000)).code !== 0 && !inCi) return;
      if (inCi) {
        const installed = await run(scripts.nginx, ["install"]);
        assert.equal(installed.code, 0, installed.output);
      }
      work = await mkdtemp(join(tmpdir(), "categorize-nginx-run-"));
      // The real edge (embedded node): h2c and HTTP/1.1 on one port.
      edgeNode = await startTestNode("all");
      const edgePort = edgeNode.port;

      const tls = join(work, "tls");
      const sh = (cmd: string) => run("bash", ["-euc", cmd], {}, 60_000);
      const certs = await sh(
        `mkdir -p '${tls}' && cd '${tls}' &&
         openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 1 -subj '/CN=throwaway CA' -keyout ca.key -out ca.crt 2>/dev/null &&
         openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj '/CN=localhost' -keyout server.key -out server.csr 2>/dev/null &&
         printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\\n' > ext &&
         openssl x509 -req -in server.csr -CA ca.crt -CAkey ca.key -CAcreateserial -days 1 -extfile ext -out server.crt 2>/dev/null`,
      );
      assert.equal(certs.code, 0, certs.output);
      ca = await readFile(join(tls, "ca.crt"), "utf8");

      httpsPort = await freePort();
      httpPort = await freePort();
      const rendered = await run(scripts.nginxRender, [work], {
        NGINX_LISTEN_HTTPS: `127.0.0.1:${httpsPort}`,
        NGINX_LISTEN_HTTP: `127.0.0.1:${httpPort}`,
        NGINX_EDGE_SERVERS: `server 127.0.0.1:${edgePort};`,
      }, 60_000);
      assert.equal(rendered.code, 0, rendered.output);
      const nginxBin = (await run("bash", ["-c", "command -v nginx || echo /usr/sbin/nginx"], {}, 10_000)).output.trim();
      nginx = spawn(nginxBin, ["-e", "stderr", "-p", work, "-c", join(work, "nginx.conf"), "-g", "daemon off;"], { stdio: ["ignore", "ignore", "pipe"] });
      // Wait until the TLS port accepts connections.
      for (let i = 0; i < 100; i++) {
        const ok = await new Promise<boolean>((r) => {
          const s = net.connect(httpsPort, "127.0.0.1", () => (s.destroy(), r(true)));
          s.on("error", () => r(false));
        });
        if (ok) break;
        await new Promise((r) => setTimeout(r, 50));
      }
    });

    after(async () => {
      if (nginx && nginx.exitCode === null) {
        nginx.kill("SIGQUIT");
        await once(nginx, "exit");
      }
      await edgeNode?.stop();
      if (work) await rm(work, { recursive: true, force: true });
    });

    /** One HTTP/2 request over TLS to nginx; returns status, headers, body, trailers. */
    async function h2Request(path: string, method: string, contentType?: string, body?: string) {
      const session = http2.connect(`https://localhost:${httpsPort}`, { ca });
      try {
        const headers: http2.OutgoingHttpHeaders = { ":path": path, ":method": method };
        if (contentType) headers["content-type"] = contentType;
        const req = session.request(headers);
        let trailers: http2.IncomingHttpHeaders = {};
        req.on("trailers", (tr: http2.IncomingHttpHeaders) => {
          trailers = tr;
        });
        req.end(body);
        const [responseHeaders] = (await once(req, "response")) as [http2.IncomingHttpHeaders & http2.IncomingHttpStatusHeader];
        let text = "";
        req.setEncoding("utf8");
        for await (const chunk of req as AsyncIterable<string>) text += chunk;
        return { status: responseHeaders[":status"], headers: responseHeaders, body: text, trailers };
      } finally {
        session.close();
      }
    }

    it("native gRPC goes to the edge over h2c; gRPC-Web, Connect and the page over HTTP/1.1 with security headers", { timeout: 60_000 }, async (t) => {
      if (!work) {
        t.skip("nginx not installed (run: infra/nginx/check.sh install); CI is not set");
        return;
      }
      const eagle = await readFile(join(sharedDir, "images", "bald_eagle.jpeg"));
      const base = `https://localhost:${httpsPort}`;
      // A gRPC client (HTTP/2 + TLS through grpc_pass), a Connect client and a gRPC-Web client (proxied).
      const viaGrpc = await createClient(CategorizeService, createGrpcTransport({ baseUrl: base, nodeOptions: { ca } })).classify({ image: eagle });
      assert.equal(viaGrpc.labels[0]?.index, 22);
      const viaConnect = await createClient(CategorizeService, createConnectTransport({ baseUrl: base, httpVersion: "1.1", nodeOptions: { ca } })).classify({ image: eagle });
      assert.equal(viaConnect.labels[0]?.name, "bald eagle");
      const viaConnectH2 = await createClient(CategorizeService, createConnectTransport({ baseUrl: base, httpVersion: "2", nodeOptions: { ca } })).classify({ image: eagle });
      assert.equal(viaConnectH2.sha256, viaGrpc.sha256);
      const viaGrpcWeb = await createClient(CategorizeService, createGrpcWebTransport({ baseUrl: base, httpVersion: "1.1", nodeOptions: { ca } })).classify({ image: eagle });
      assert.equal(viaGrpcWeb.labels[0]?.index, 22);

      const page = await h2Request("/", "GET");
      assert.equal(page.status, 200);
      assert.match(page.body, /<title>categorize<\/title>/);
      assert.match(String(page.headers["strict-transport-security"]), /max-age=\d+/);
      assert.equal(page.headers["x-content-type-options"], "nosniff");
      assert.match(String(page.headers["content-security-policy"]), /script-src 'self'.*connect-src 'self'|connect-src 'self'.*script-src 'self'/);
      assert.match(String(page.headers["content-security-policy"]), /frame-ancestors 'none'/);

      const metrics = await h2Request("/metrics", "GET");
      assert.equal(metrics.status, 404, "metrics are not exposed through the proxy");
    });

    it("TLS 1.2 is accepted, TLS 1.1 refused; plain HTTP redirects to HTTPS", { timeout: 60_000 }, async (t) => {
      if (!work) {
        t.skip("nginx not installed (run: infra/nginx/check.sh install); CI is not set");
        return;
      }
      const handshake = (version: tls.SecureVersion) =>
        new Promise<string>((r) => {
          // SECLEVEL=0 lets this client offer TLS 1.1, so a refusal is nginx's.
          const s = tls.connect({ host: "127.0.0.1", port: httpsPort, servername: "localhost", ca, minVersion: version, maxVersion: version, ciphers: "DEFAULT@SECLEVEL=0" }, () => {
            const got = s.getProtocol() ?? "none";
            s.destroy();
            r(got);
          });
          s.on("error", (e: Error) => r(`error: ${e.message}`));
        });
      assert.equal(await handshake("TLSv1.2"), "TLSv1.2");
      assert.equal(await handshake("TLSv1.3"), "TLSv1.3");
      assert.match(await handshake("TLSv1.1"), /^error: .*(protocol|version)/i);
      // The same with openssl s_client: TLS 1.1 and a weak (non-AEAD, RSA key exchange) cipher are refused.
      const sClient = (args: string) => run("bash", ["-c", `echo | timeout 10 openssl s_client -connect 127.0.0.1:${httpsPort} -servername localhost ${args} 2>&1`], {}, 20_000);
      const tls11 = await sClient("-tls1_1 -cipher 'DEFAULT@SECLEVEL=0'");
      assert.notEqual(tls11.code, 0, tls11.output);
      const weak = await sClient("-tls1_2 -cipher 'AES128-SHA:DES-CBC3-SHA@SECLEVEL=0'");
      assert.notEqual(weak.code, 0, weak.output);
      assert.match(weak.output, /alert|handshake failure|no cipher|no shared cipher/i);
      const strong = await sClient("-tls1_2");
      assert.equal(strong.code, 0, strong.output);
      assert.match(strong.output, /Protocol\s*: TLSv1\.2|TLSv1\.2/);

      const res = await new Promise<http.IncomingMessage>((r, j) => http.get({ host: "127.0.0.1", port: httpPort, path: "/x?y=1" }, r).on("error", j));
      res.resume();
      assert.equal(res.statusCode, 308);
      assert.equal(res.headers.location, "https://127.0.0.1/x?y=1");
    });
  });
});
