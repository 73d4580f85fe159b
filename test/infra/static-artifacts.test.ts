/**
 * Static checks of the deployment artifacts with the real tools:
 *   - Kubernetes: infra/k8s/validate.sh (kustomize build + kubeconform -strict,
 *     CRD validators for the operator examples), plus copies with deliberate
 *     errors that it must reject;
 *   - Compose: infra/validate-compose.sh (docker compose config -q + policy);
 *   - Dockerfiles: infra/docker/lint.sh (hadolint);
 *   - nginx: infra/nginx/check.sh (nginx -t on the rendered template), and the
 *     rendered config actually routing gRPC vs HTTP/1.1 on 127.0.0.1;
 *   - the operations port layout: probes, healthchecks and scrapes on the
 *     admin port (ADMIN_PORT=9464), nothing public routing /metrics or /readyz.
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
import { servingNodeFlags } from "../../cli/node-flags.js";
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

/** Every document of a YAML stream: js-yaml (a dev dependency of eslint), else python3 with PyYAML. */
async function loadAllYaml(source: string): Promise<unknown[]> {
  const specifier: string = "js-yaml"; // a variable: no type declarations needed
  try {
    const mod = (await import(specifier)) as { loadAll?: unknown; default?: { loadAll?: unknown } };
    const loadAll = mod.loadAll ?? mod.default?.loadAll;
    if (typeof loadAll === "function") return (loadAll as (s: string) => unknown[])(source).filter((d) => d !== null && d !== undefined);
  } catch {
    // fall through to python3
  }
  const r = await new Promise<RunResult>((resolvePromise) => {
    const child = execFile("python3", ["-c", "import json, sys, yaml; json.dump([d for d in yaml.safe_load_all(sys.stdin) if d is not None], sys.stdout)"], (err, stdout, stderr) =>
      resolvePromise({ code: err === null ? 0 : 1, output: err === null ? stdout : stderr }),
    );
    child.stdin?.end(source);
  });
  assert.equal(r.code, 0, `no YAML parser (js-yaml or PyYAML): ${r.output}`);
  return JSON.parse(r.output) as unknown[];
}

/** Loose access into parsed YAML/JSON. */
type Tree = Record<string, unknown>;
const obj = (v: unknown): Tree => (typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Tree) : {});
const arr = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

const ADMIN_PORT = 9464;

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

  it("probes and scrapes use the admin port; no Ingress routes /metrics or /readyz; NetworkPolicies admit monitoring on 9464 only", { timeout: 120_000 }, async (t) => {
    if (!(await requireTools(t, scripts.k8s, "kubeconform/kustomize/schemas"))) return;
    const kustomize = join(repo, ".local/bin/kustomize");
    const promK8s = await loadAllYaml(await readFile(join(repo, "infra/prometheus/prometheus-k8s.yml"), "utf8"));
    const scrapeJobs = arr(obj(promK8s[0]).scrape_configs).map(obj);
    for (const target of ["base", "overlays/local", "overlays/production"]) {
      const built = await run(kustomize, ["build", join(repo, "infra/k8s", target)], {}, 60_000);
      assert.equal(built.code, 0, built.output);
      const docs = (await loadAllYaml(built.output)).map(obj);
      const kind = (k: string) => docs.filter((d) => d.kind === k);

      const common = kind("ConfigMap").map((c) => obj(c.data)).filter((d) => d.HOST !== undefined);
      assert.equal(common.length, 1, `${target}: one ConfigMap with HOST`);
      assert.equal(common[0]!.ADMIN_PORT, String(ADMIN_PORT), `${target}: ADMIN_PORT in the common ConfigMap`);
      assert.equal(common[0]!.HOST, "0.0.0.0");
      assert.equal(common[0]!.ADMIN_HOST, undefined, `${target}: ADMIN_HOST stays unset (defaults to HOST)`);

      const deployments = kind("Deployment");
      assert.equal(deployments.length, 2, target);
      for (const d of deployments) {
        const name = String(obj(d.metadata).name);
        const template = obj(obj(d.spec).template);
        const labels = obj(obj(template.metadata).labels);
        const annotations = obj(obj(template.metadata).annotations);
        assert.equal(annotations["prometheus.io/port"], String(ADMIN_PORT), `${target} ${name}: prometheus.io/port`);
        const [container] = arr(obj(template.spec).containers).map(obj);
        assert.ok(container !== undefined);
        const ports = arr(container.ports).map(obj);
        assert.deepEqual(
          ports.map((p) => [p.name, p.containerPort]),
          [
            ["http", 8080],
            ["admin", ADMIN_PORT],
          ],
          `${target} ${name}: container ports`,
        );
        for (const probe of ["startupProbe", "readinessProbe", "livenessProbe"]) {
          const get = obj(obj(container[probe]).httpGet);
          assert.equal(get.port, "admin", `${target} ${name}: ${probe} on the admin port`);
          assert.equal(get.scheme ?? "HTTP", "HTTP", `${target} ${name}: ${probe} over plain HTTP`);
          assert.equal(get.path, probe === "readinessProbe" ? "/readyz" : "/healthz", `${target} ${name}: ${probe} path`);
        }
        // prometheus-k8s.yml discovers this pod: its label keep matches, and it keeps the port named admin.
        const role = String(labels["app.kubernetes.io/component"]);
        const job = scrapeJobs.find((j) => j.job_name === `categorize-${role}`);
        assert.ok(job !== undefined, `no scrape job for ${role}`);
        const keeps = arr(job.relabel_configs).map(obj).filter((r) => r.action === "keep");
        for (const keep of keeps) {
          const values = arr(keep.source_labels).map((l) => {
            const label = String(l);
            if (label === "__meta_kubernetes_pod_container_port_name") return "admin";
            if (label.startsWith("__meta_kubernetes_pod_label_")) {
              const key = Object.keys(labels).find((k) => k.replace(/[^A-Za-z0-9_]/g, "_") === label.slice("__meta_kubernetes_pod_label_".length));
              return key === undefined ? "" : String(labels[key]);
            }
            assert.fail(`${String(job.job_name)}: unexpected keep on ${label}`);
          });
          assert.match(values.join(";"), new RegExp(`^(?:${String(keep.regex)})$`), `${String(job.job_name)} keeps ${target} ${name} (${arr(keep.source_labels).join()})`);
        }
      }

      for (const svc of kind("Service")) {
        for (const p of arr(obj(svc.spec).ports).map(obj)) {
          assert.notEqual(p.port, ADMIN_PORT, `${target}: Service ${String(obj(svc.metadata).name)} must not expose the admin port`);
          assert.notEqual(p.targetPort, "admin");
        }
      }

      const ingresses = kind("Ingress");
      assert.ok(ingresses.length > 0);
      for (const ing of ingresses) {
        const name = String(obj(ing.metadata).name);
        const deniesAll = obj(obj(ing.metadata).annotations)["nginx.ingress.kubernetes.io/denylist-source-range"] === "0.0.0.0/0,::/0";
        for (const rule of arr(obj(ing.spec).rules).map(obj)) {
          for (const p of arr(obj(rule.http).paths).map(obj)) {
            const path = String(p.path);
            assert.ok(!/^\/(metrics|readyz)\b/.test(path), `${target}: Ingress ${name} routes ${path}`);
            if (/^\/health/.test(path)) assert.ok(deniesAll, `${target}: Ingress ${name} exposes ${path}`);
            const port = obj(obj(obj(p.backend).service).port);
            assert.equal(port.name, "http", `${target}: Ingress ${name} ${path} goes to the public port only`);
          }
        }
      }

      // Who may reach which port of the categorize pods.
      for (const np of kind("NetworkPolicy")) {
        for (const rule of arr(obj(np.spec).ingress).map(obj)) {
          const ports = arr(rule.ports).map((p) => obj(p).port);
          const fromMonitoring = arr(rule.from).some((f) => obj(obj(obj(f).namespaceSelector).matchLabels)["kubernetes.io/metadata.name"] === "monitoring");
          if (fromMonitoring) assert.deepEqual(ports, [ADMIN_PORT], `${target}: NetworkPolicy ${String(obj(np.metadata).name)} lets monitoring reach only the admin port`);
          if (ports.includes(ADMIN_PORT)) {
            assert.ok(fromMonitoring && arr(rule.from).length === 1, `${target}: NetworkPolicy ${String(obj(np.metadata).name)} admits only monitoring on the admin port`);
          }
        }
      }
      const admitted = kind("NetworkPolicy").flatMap((np) =>
        arr(obj(np.spec).ingress).flatMap((r) => (arr(obj(r).ports).some((p) => obj(p).port === ADMIN_PORT) ? [obj(obj(np.spec).podSelector).matchLabels] : [])),
      );
      assert.equal(admitted.length, 2, `${target}: edge and core admit Prometheus on the admin port`);
    }
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

  it("node healthchecks use the admin port; it is not published; Prometheus scrapes it", { timeout: 120_000 }, async (t) => {
    if (!(await requireTools(t, scripts.compose, "docker compose"))) return;
    const plugin = await run("docker", ["compose", "version"], {}, 30_000);
    const [cmd, ...pre] = plugin.code === 0 ? ["docker", "compose"] : [join(repo, ".local/bin/docker-compose")];
    const r = await run(cmd, [...pre, "-f", join(repo, "infra/compose.yaml"), "config", "--format", "json"], {}, 60_000);
    assert.equal(r.code, 0, r.output);
    const services = obj((JSON.parse(r.output) as Tree).services);
    const nodes = Object.entries(services).filter(([, svc]) => /^categorize-(edge|core):/.test(String(obj(svc).image)) && !arr(obj(svc).command).includes("fetch"));
    assert.deepEqual(nodes.map(([name]) => name).sort(), ["core-1", "core-2", "edge-1", "edge-2"]);
    for (const [name, svc] of nodes) {
      const env = obj(obj(svc).environment);
      assert.equal(env.ADMIN_PORT, String(ADMIN_PORT), `${name}: ADMIN_PORT`);
      assert.equal(env.PORT, "8080", `${name}: the public port stays`);
      const test = arr(obj(obj(svc).healthcheck).test).join(" ");
      assert.match(test, /port:process\.env\.ADMIN_PORT,path:'\/readyz'/, `${name}: readiness healthcheck on the admin port`);
      assert.doesNotMatch(test, /port:8080/);
      for (const p of arr(obj(svc).ports)) assert.notEqual(String(obj(p).target), String(ADMIN_PORT), `${name}: the admin port is published`);
    }
    const prom = obj(services.prometheus);
    assert.ok(arr(prom.command).includes("--config.file=/etc/prometheus/prometheus-compose.yml"), "compose's Prometheus uses prometheus-compose.yml");
    const promConfig = obj((await loadAllYaml(await readFile(join(repo, "infra/prometheus/prometheus-compose.yml"), "utf8")))[0]);
    const targets = arr(promConfig.scrape_configs)
      .map(obj)
      .filter((j) => String(j.job_name).startsWith("categorize-"))
      .flatMap((j) => arr(j.static_configs).flatMap((c) => arr(obj(c).targets).map(String)));
    assert.deepEqual(targets.sort(), nodes.map(([name]) => `${name}:${ADMIN_PORT}`).sort());
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

  it("ENV ADMIN_PORT=9464, EXPOSE 9464, and the HEALTHCHECK probes the admin port when set, else the public port", { timeout: 60_000 }, async () => {
    // Stand-ins on 127.0.0.1: one answers /healthz 200, the other 500.
    const serve = async (status: number) => {
      const srv = http.createServer((req, res) => {
        res.statusCode = req.url === "/healthz" ? status : 404;
        res.end();
      });
      srv.listen(0, "127.0.0.1");
      await once(srv, "listening");
      return srv;
    };
    const good = await serve(200);
    const bad = await serve(500);
    const portOf = (srv: http.Server) => String((srv.address() as AddressInfo).port);
    try {
      for (const role of ["edge", "core"]) {
        const text = await readFile(join(repo, `infra/docker/Dockerfile.${role}`), "utf8");
        assert.match(text, new RegExp(`^\\s+ADMIN_PORT=${ADMIN_PORT}\\b`, "m"), `Dockerfile.${role}: ENV ADMIN_PORT`);
        assert.match(text, new RegExp(`^EXPOSE 8080 ${ADMIN_PORT}$`, "m"), `Dockerfile.${role}: EXPOSE`);
        const cmd = /^HEALTHCHECK .*\\\n\s+CMD (\[.*\])$/m.exec(text);
        assert.ok(cmd?.[1] !== undefined, `Dockerfile.${role}: HEALTHCHECK CMD in exec form`);
        const argv = JSON.parse(cmd[1]) as string[];
        assert.deepEqual(argv.slice(0, 2), ["node", "-e"]);
        // The probe exits 0 only if it reached the stand-in that answers 200.
        const probe = async (env: Record<string, string>) =>
          new Promise<number | null>((resolvePromise) => {
            spawn(argv[0]!, argv.slice(1), { env: { PATH: process.env.PATH ?? "", ...env }, stdio: "ignore" }).on("exit", (code) => resolvePromise(code));
          });
        assert.equal(await probe({ ADMIN_PORT: portOf(good), PORT: portOf(bad) }), 0, `${role}: ADMIN_PORT set: the admin port`);
        // Plain HTTP on the admin port even when the public port has TLS.
        assert.equal(await probe({ ADMIN_PORT: portOf(good), PORT: portOf(bad), TLS_CERT_FILE: "/nonexistent.pem" }), 0, `${role}: admin port over plain HTTP with TLS_CERT_FILE`);
        assert.equal(await probe({ ADMIN_PORT: portOf(bad), PORT: portOf(good) }), 1, `${role}: an unhealthy admin port fails`);
        assert.equal(await probe({ ADMIN_PORT: "", PORT: portOf(good) }), 0, `${role}: ADMIN_PORT empty: the public port`);
        assert.equal(await probe({ PORT: portOf(bad) }), 1, `${role}: ADMIN_PORT unset: the public port`);
      }
    } finally {
      good.close();
      bad.close();
    }
  });

  it("the images' ENTRYPOINT and npm start run node with the serving V8 flags the bench's nodes get", async () => {
    for (const role of ["edge", "core"]) {
      const text = await readFile(join(repo, `infra/docker/Dockerfile.${role}`), "utf8");
      const entry = /^ENTRYPOINT (\[.*\])$/m.exec(text);
      assert.ok(entry?.[1] !== undefined, `Dockerfile.${role}: ENTRYPOINT in exec form`);
      assert.deepEqual(JSON.parse(entry[1]), ["node", ...servingNodeFlags, "dist/cli/main.js"], `Dockerfile.${role}: ENTRYPOINT`);
    }
    const pkg = JSON.parse(await readFile(join(repo, "package.json"), "utf8")) as { scripts: Record<string, string> };
    assert.ok(pkg.scripts.start?.endsWith(`&& node ${servingNodeFlags.join(" ")} dist/cli/main.js serve all`), `npm start: ${pkg.scripts.start}`);
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

      for (const path of ["/metrics", "/readyz", "/healthz", "/health"]) {
        const internal = await h2Request(path, "GET");
        assert.equal(internal.status, 404, `${path} is not exposed through the proxy`);
      }
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
