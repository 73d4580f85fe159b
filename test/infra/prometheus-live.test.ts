import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { categorizeClient } from "../support/clients.js";
import { readImage } from "../support/fixtures.js";
import { repoRoot, startTestNode } from "../support/nodes.js";

const prometheusBin = "/usr/bin/prometheus";

async function freePort(): Promise<number> {
  const srv = createServer();
  srv.listen(0, "127.0.0.1");
  await once(srv, "listening");
  const port = (srv.address() as { port: number }).port;
  srv.close();
  return port;
}

async function prometheusAvailable(): Promise<string | false> {
  try {
    await readFile(prometheusBin);
    return false;
  } catch {
    if (process.env.CI !== undefined) throw new Error("prometheus is missing (infra/prometheus/check.sh installs it)");
    return "prometheus is not installed (run infra/prometheus/check.sh)";
  }
}

describe("a real Prometheus scraping a running edge and core", { skip: await prometheusAvailable(), timeout: 180_000 }, () => {
  let dir: string;
  let core: RunningNode | undefined;
  let edge: RunningNode;
  let prom: ChildProcess;
  let api: string;

  const query = async (q: string) => {
    const res = await fetch(`${api}/api/v1/query?query=${encodeURIComponent(q)}`);
    const body = (await res.json()) as { data: { result: { metric: Record<string, string>; value: [number, string] }[] } };
    return body.data.result;
  };
  const waitFor = async (what: string, fn: () => Promise<boolean>, timeoutMs = 60_000) => {
    const deadline = Date.now() + timeoutMs;
    while (!(await fn())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-prom-"));
    // As deployed (images, compose, Kubernetes): metrics on the admin port, none on the public one.
    core = await startTestNode("core", { ADMIN_PORT: "0" });
    edge = await startTestNode("edge", { CORE_URLS: core.url, ADMIN_PORT: "0" });
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    // The repository's alert rules, with their `for:` shortened so the test need not wait minutes.
    const rules = (await readFile(join(repoRoot, "infra/prometheus/rules/alerts.yml"), "utf8")).replace(/for: \d+[smh]/g, "for: 2s");
    await writeFile(join(dir, "alerts.yml"), rules);
    await writeFile(join(dir, "recording.yml"), await readFile(join(repoRoot, "infra/prometheus/rules/recording.yml"), "utf8"));
    const target = (url: string | undefined) => {
      assert.ok(url !== undefined, "the node has an admin listener");
      return new URL(url).host;
    };
    await writeFile(
      join(dir, "prometheus.yml"),
      [
        "global: { scrape_interval: 1s, evaluation_interval: 1s }",
        "rule_files: [alerts.yml, recording.yml]",
        "scrape_configs:",
        `  - job_name: categorize-edge\n    static_configs: [{ targets: ["${target(edge.adminUrl)}"] }]`,
        `  - job_name: categorize-core\n    static_configs: [{ targets: ["${target(core.adminUrl)}"] }]`,
        "",
      ].join("\n"),
    );
    prom = spawn(prometheusBin, [`--config.file=${join(dir, "prometheus.yml")}`, `--storage.tsdb.path=${join(dir, "data")}`, `--web.listen-address=127.0.0.1:${port}`], { stdio: "ignore" });
    await waitFor("prometheus to answer", () => fetch(`${api}/-/ready`).then((r) => r.ok, () => false));
  });

  after(async () => {
    if (prom.exitCode === null) {
      prom.kill("SIGTERM");
      await once(prom, "exit");
    }
    await edge.stop();
    await core?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it("scrapes the admin ports; the public ports serve no /metrics or /readyz", async () => {
    for (const node of [edge, core!]) {
      assert.notEqual(node.adminUrl, node.url);
      for (const path of ["/metrics", "/readyz"]) {
        const res = await fetch(`${node.url}${path}`);
        await res.body?.cancel();
        assert.equal(res.status, 404, `${node.config.role} public ${path}`);
      }
      const metrics = await fetch(`${node.adminUrl}/metrics`);
      assert.equal(metrics.status, 200);
      assert.match(await metrics.text(), /^categorize_ready(\{.*\})? 1$/m);
    }
    await waitFor("both targets up", async () => (await query("up")).filter((r) => r.value[1] === "1").length === 2);
    const instances = (await query("up")).map((r) => r.metric.instance).sort();
    assert.deepEqual(instances, [new URL(edge.adminUrl!).host, new URL(core!.adminUrl!).host].sort());
  });

  it("collects the key series from both nodes after traffic", async () => {
    const client = categorizeClient(edge.url);
    await client.classify({ image: readImage("bald_eagle.jpeg") });
    await client.classify({ image: readImage("bald_eagle.jpeg") });
    await client.classify({ image: Buffer.from("nope") }).catch(() => undefined);
    await waitFor("both targets up", async () => (await query("up")).filter((r) => r.value[1] === "1").length === 2);
    assert.deepEqual((await query("up")).map((r) => r.metric.job).sort(), ["categorize-core", "categorize-edge"]);
    const expectSeries = async (q: string) => waitFor(`series ${q}`, async () => (await query(q)).length > 0, 30_000);
    await expectSeries('categorize_rpc_requests_total{job="categorize-edge",method="Classify",code="OK"}');
    await expectSeries('categorize_rpc_requests_total{job="categorize-edge",method="Classify",code="INVALID_ARGUMENT"}');
    await expectSeries('categorize_inference_duration_seconds_bucket{job="categorize-core"}');
    await expectSeries('categorize_rpc_in_flight{job="categorize-core",method="Infer"} == 1');
    await expectSeries('categorize_batch_size_count{job="categorize-core"}');
    await expectSeries('categorize_edge_cache_requests_total{result="hit"}');
    await expectSeries('categorize_model_info{name="mobilenetv2-12-int8"}');
    await expectSeries('categorize_ready{job="categorize-core"} == 1');
    await expectSeries("process_resident_memory_bytes");
  });

  it("fires the instance-down alert when core is stopped", async () => {
    await core!.stop();
    core = undefined;
    await waitFor(
      "CategorizeInstanceDown to fire",
      async () => {
        const res = await fetch(`${api}/api/v1/alerts`);
        const body = (await res.json()) as { data: { alerts: { labels: Record<string, string>; state: string }[] } };
        return body.data.alerts.some((a) => a.labels.alertname === "CategorizeInstanceDown" && a.labels.job === "categorize-core" && a.state === "firing");
      },
      60_000,
    );
  });
});
