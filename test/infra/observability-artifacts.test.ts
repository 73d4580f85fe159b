/**
 * Checks the observability artifacts against the code:
 * - infra/prometheus/check.sh (promtool check config / check rules / test rules,
 *   amtool) passes;
 * - every metric referenced by a Grafana dashboard, an alert or a recording rule
 *   is exported by common/metrics.ts, is a recording rule output, or is an
 *   explicitly whitelisted external series (Prometheus, cAdvisor,
 *   kube-state-metrics);
 * - every metric family of common/metrics.ts has a dashboard panel;
 * - every dashboard expression parses (promtool), dashboards are well formed,
 *   every alert has severity / summary / description / a runbook section, and
 *   a promtool test case where it fires and one where it does not.
 *
 * Run: node --import tsx --test test/infra/observability-artifacts.test.ts
 * Tests that need promtool skip, with the reason, only when promtool is
 * missing and CI is not set (in CI, check.sh installs it).
 */
import { test } from "node:test";
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { createMetrics } from "../../common/metrics.js";

const REPO = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const PROM_DIR = path.join(REPO, "infra/prometheus");
const DASH_DIR = path.join(REPO, "infra/grafana/dashboards");
const RUNBOOK = path.join(REPO, "docs/runbook.md");

/** Series that other exporters provide, allowed in expressions by name or prefix. */
const EXTERNAL_EXACT = new Set(["up", "ALERTS"]); // Prometheus itself
const EXTERNAL_PREFIXES = ["container_", "kube_"]; // cAdvisor, kube-state-metrics

/** The process metrics an operator needs on the dashboards (prom-client defaults). */
const REQUIRED_PROCESS_METRICS = [
  "process_resident_memory_bytes",
  "process_cpu_seconds_total",
  "nodejs_eventloop_lag_p99_seconds",
  "nodejs_heap_size_used_bytes",
  "process_open_fds",
  "nodejs_active_handles_total",
];

// ------------------------------------------------------------------ helpers --

function findPromtool(): string | undefined {
  if (process.env.PROMTOOL !== undefined && process.env.PROMTOOL !== "") return process.env.PROMTOOL;
  const local = path.join(REPO, ".local/bin/promtool");
  if (existsSync(local)) return local;
  for (const dir of (process.env.PATH ?? "").split(path.delimiter)) {
    if (dir !== "" && existsSync(path.join(dir, "promtool"))) return path.join(dir, "promtool");
  }
  return undefined;
}

function promtoolSkipReason(): string | false {
  if (findPromtool() !== undefined || process.env.CI !== undefined) return false;
  return "promtool is not installed and CI is not set (run infra/prometheus/check.sh once to install it)";
}

type YamlLoad = (source: string) => unknown;

/**
 * YAML parser: js-yaml from node_modules (a dev dependency of eslint), else
 * python3 with PyYAML. The specifier is a variable so that TypeScript does not
 * need js-yaml's type declarations.
 */
async function yamlLoader(): Promise<YamlLoad> {
  const specifier: string = "js-yaml";
  try {
    const mod: unknown = await import(specifier);
    const load = pickFunction(mod, "load") ?? pickFunction(field(mod, "default"), "load");
    if (load !== undefined) return (source) => load(source);
  } catch {
    // fall through to python3
  }
  return (source) => {
    const r = spawnSync("python3", ["-c", "import json, sys, yaml; json.dump(yaml.safe_load(sys.stdin), sys.stdout)"], {
      input: source,
      encoding: "utf8",
    });
    if (r.status !== 0) throw new Error(`no YAML parser: install js-yaml (npm) or PyYAML (python3): ${r.stderr}`);
    return JSON.parse(r.stdout) as unknown;
  };
}

function field(value: unknown, key: string): unknown {
  return typeof value === "object" && value !== null ? (value as Record<string, unknown>)[key] : undefined;
}

function pickFunction(value: unknown, key: string): ((source: string) => unknown) | undefined {
  const f = field(value, key);
  return typeof f === "function" ? (f as (source: string) => unknown) : undefined;
}

function asArray(value: unknown): unknown[] {
  return Array.isArray(value) ? value : [];
}

function asString(value: unknown): string | undefined {
  return typeof value === "string" ? value : undefined;
}

interface Rule {
  readonly file: string;
  readonly group: string;
  readonly record: string | undefined;
  readonly alert: string | undefined;
  readonly expr: string;
  readonly labels: Record<string, unknown>;
  readonly annotations: Record<string, unknown>;
}

function readRules(load: YamlLoad, file: string): Rule[] {
  const doc = load(readFileSync(path.join(PROM_DIR, "rules", file), "utf8"));
  const rules: Rule[] = [];
  for (const g of asArray(field(doc, "groups"))) {
    for (const r of asArray(field(g, "rules"))) {
      rules.push({
        file,
        group: asString(field(g, "name")) ?? "?",
        record: asString(field(r, "record")),
        alert: asString(field(r, "alert")),
        expr: asString(field(r, "expr")) ?? "",
        labels: (field(r, "labels") ?? {}) as Record<string, unknown>,
        annotations: (field(r, "annotations") ?? {}) as Record<string, unknown>,
      });
    }
  }
  assert.ok(rules.length > 0, `${file} has no rules`);
  return rules;
}

interface PanelExpr {
  readonly dashboard: string;
  readonly panel: string;
  readonly expr: string;
}

interface Dashboard {
  readonly file: string;
  readonly json: Record<string, unknown>;
  readonly panels: Record<string, unknown>[];
  readonly exprs: PanelExpr[];
  /** Metric selectors of template variable queries (label_values(metric, label)). */
  readonly variableExprs: string[];
}

/** Panels at any depth (rows may nest panels when collapsed). */
function flattenPanels(panels: unknown): Record<string, unknown>[] {
  const out: Record<string, unknown>[] = [];
  for (const p of asArray(panels)) {
    if (typeof p !== "object" || p === null) continue;
    out.push(p as Record<string, unknown>);
    out.push(...flattenPanels(field(p, "panels")));
  }
  return out;
}

function readDashboards(): Dashboard[] {
  const files = readdirSync(DASH_DIR).filter((f) => f.endsWith(".json")).sort();
  assert.deepEqual(files, ["core.json", "edge.json", "overview.json"]);
  return files.map((file) => {
    const json = JSON.parse(readFileSync(path.join(DASH_DIR, file), "utf8")) as Record<string, unknown>;
    const panels = flattenPanels(json.panels);
    const exprs: PanelExpr[] = [];
    for (const p of panels) {
      for (const t of asArray(p.targets)) {
        const expr = asString(field(t, "expr"));
        if (expr !== undefined) exprs.push({ dashboard: file, panel: String(p.title), expr });
      }
    }
    const variableExprs: string[] = [];
    for (const v of asArray(field(json.templating, "list"))) {
      if (field(v, "type") !== "query") continue;
      const q = asString(field(v, "query")) ?? asString(field(field(v, "query"), "query")) ?? "";
      const m = /^\s*label_values\((.*),\s*[A-Za-z_]\w*\s*\)\s*$/s.exec(q);
      if (m?.[1] !== undefined) variableExprs.push(m[1]);
      else if (!/^\s*label_values\(\s*[A-Za-z_]\w*\s*\)\s*$/.test(q)) variableExprs.push(q);
    }
    return { file, json, panels, exprs, variableExprs };
  });
}

const AGGREGATIONS = ["sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk", "quantile", "limitk", "limit_ratio"];
/** Words that are never metric names (aggregations may be followed by "by (...)" instead of "("). */
const KEYWORDS = new Set(["and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "inf", "nan", ...AGGREGATIONS]);
const GROUPING = new Set(["by", "without", "on", "ignoring", "group_left", "group_right"]);

/**
 * Metric names referenced by a PromQL expression: identifiers that are not a
 * function or aggregation (followed by "("), not a keyword, not a label name
 * in a grouping clause, and not inside a string, label matcher or range.
 * Grafana variables ($x, ${x}) are removed first.
 */
function metricNamesIn(expr: string): string[] {
  let s = expr.replace(/#[^\n]*/g, " ");
  s = s.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
  s = s.replace(/\$\{[^}]*\}|\$\w+/g, " ");
  s = s.replace(/\{[^}]*\}/g, " ");
  s = s.replace(/\[[^\]]*\]/g, " ");
  const tokens = s.match(/\d[\w.]*|[A-Za-z_:][\w:]*|[(),]|[^\s\w(),]+/g) ?? [];
  const names: string[] = [];
  for (let i = 0; i < tokens.length; i++) {
    const t = tokens[i] ?? "";
    if (!/^[A-Za-z_:]/.test(t)) continue;
    const next = tokens[i + 1];
    if (GROUPING.has(t) && next === "(") {
      let depth = 0;
      for (i = i + 1; i < tokens.length; i++) {
        if (tokens[i] === "(") depth++;
        else if (tokens[i] === ")" && --depth === 0) break;
      }
      continue;
    }
    if (KEYWORDS.has(t) || next === "(") continue;
    names.push(t);
  }
  return names;
}

interface Exported {
  readonly names: Set<string>;
  readonly types: Map<string, string>;
  /** Families declared in common/metrics.ts (not the prom-client defaults). */
  readonly families: string[];
}

async function exportedMetrics(): Promise<Exported> {
  const metrics = createMetrics({ node_role: "all", node_id: "artifact-test" });
  const json = await metrics.registry.getMetricsAsJSON();
  const types = new Map<string, string>();
  for (const m of json) types.set(m.name, String(m.type));
  metrics.registry.clear();
  const names = new Set(types.keys());
  return { names, types, families: [...names].filter((n) => n.startsWith("categorize_")) };
}

/** The exported family a referenced name belongs to (histogram series suffixes stripped). */
function familyOf(name: string, exported: Exported): string | undefined {
  if (exported.names.has(name)) return name;
  const m = /^(.*)_(bucket|sum|count)$/.exec(name);
  if (m?.[1] !== undefined && ["histogram", "summary"].includes(exported.types.get(m[1]) ?? "")) return m[1];
  return undefined;
}

function isExternal(name: string): boolean {
  return EXTERNAL_EXACT.has(name) || EXTERNAL_PREFIXES.some((p) => name.startsWith(p));
}

/** Problems with the names of one expression; empty when all are known. */
function unknownNames(expr: string, exported: Exported, recorded: Set<string>): string[] {
  const bad: string[] = [];
  for (const n of metricNamesIn(expr)) {
    if (n.includes(":")) {
      if (!recorded.has(n)) bad.push(`${n} (no recording rule records it)`);
    } else if (n.startsWith("categorize_") || /^(process|nodejs)_/.test(n)) {
      // Ours, or prom-client's default process and runtime metrics under their standard names.
      if (familyOf(n, exported) === undefined) bad.push(`${n} (not exported by common/metrics.ts)`);
    } else if (!isExternal(n)) {
      bad.push(`${n} (not categorize_*, process_*/nodejs_* of common/metrics.ts, or a whitelisted external metric)`);
    }
  }
  return bad;
}

/** GitHub-style heading anchors of a markdown file. */
function markdownAnchors(file: string): Set<string> {
  const anchors = new Set<string>();
  for (const line of readFileSync(file, "utf8").split("\n")) {
    const m = /^#{1,6}\s+(.*)$/.exec(line);
    if (m?.[1] === undefined) continue;
    anchors.add(m[1].trim().toLowerCase().replace(/[^\w\- ]/g, "").replace(/ /g, "-"));
  }
  return anchors;
}

// -------------------------------------------------------------------- tests --

test("metricNamesIn finds metric names and ignores functions, labels, strings and variables", () => {
  assert.deepEqual(
    metricNamesIn(
      'histogram_quantile(0.99, sum by (le, method) (rate(categorize_rpc_duration_seconds_bucket{job=~"$job", method!="x"}[$__rate_interval])))',
    ),
    ["categorize_rpc_duration_seconds_bucket"],
  );
  assert.deepEqual(
    metricNamesIn("a:b:c / on () group_left () x_total > 0.8 and on (job) deriv(y[10m:1m]) > 0 or vector(0) offset 5m"),
    ["a:b:c", "x_total", "y"],
  );
  assert.deepEqual(metricNamesIn('sum(rate(m{le="+Inf"}[5m])) by (job) unless count without (instance) (n)'), ["m", "n"]);
});

test("infra/prometheus/check.sh passes (promtool check config, check rules, test rules)", { skip: promtoolSkipReason() }, () => {
  const r = spawnSync("bash", [path.join(PROM_DIR, "check.sh")], { encoding: "utf8", timeout: 15 * 60_000 });
  assert.equal(r.status, 0, `check.sh failed (exit ${String(r.status)}):\n${r.stdout}\n${r.stderr}`);
  assert.match(r.stderr, /all checks passed/);
});

test("every metric in the dashboards is exported, recorded or whitelisted", async () => {
  const load = await yamlLoader();
  const exported = await exportedMetrics();
  const recorded = new Set(readRules(load, "recording.yml").flatMap((r) => (r.record === undefined ? [] : [r.record])));
  const problems: string[] = [];
  for (const d of readDashboards()) {
    assert.ok(d.exprs.length > 0, `${d.file} has no expressions`);
    for (const e of d.exprs) {
      for (const bad of unknownNames(e.expr, exported, recorded)) problems.push(`${e.dashboard} "${e.panel}": ${bad}`);
    }
    for (const q of d.variableExprs) {
      for (const bad of unknownNames(q, exported, recorded)) problems.push(`${d.file} variable: ${bad}`);
    }
  }
  assert.deepEqual(problems, []);
});

test("every metric in alerts.yml and recording.yml is exported, recorded or whitelisted", async () => {
  const load = await yamlLoader();
  const exported = await exportedMetrics();
  const rules = [...readRules(load, "recording.yml"), ...readRules(load, "alerts.yml")];
  const recorded = new Set(rules.flatMap((r) => (r.record === undefined ? [] : [r.record])));
  const problems: string[] = [];
  for (const r of rules) {
    assert.ok(r.expr.trim() !== "", `${r.file}: ${r.record ?? r.alert ?? "?"} has no expr`);
    for (const bad of unknownNames(r.expr, exported, recorded)) problems.push(`${r.file} ${r.record ?? r.alert ?? "?"}: ${bad}`);
  }
  assert.deepEqual(problems, []);
  for (const name of recorded) assert.match(name, /^categorize:[a-z0-9_]+(:[a-z0-9_]+)?$/, `recording rule name ${name}`);
});

test("process and runtime metrics keep their standard names, once, with the node's labels", async () => {
  const metrics = createMetrics({ node_role: "all", node_id: "names-test" });
  const text = await metrics.registry.metrics();
  metrics.registry.clear();
  for (const name of REQUIRED_PROCESS_METRICS) assert.match(text, new RegExp(`^${name}\\{[^}]*node_role="all"[^}]*node_id="names-test"`, "m"), name);
  assert.doesNotMatch(text, /process_process_|categorize_process_|categorize_nodejs_/);
  const own = [...text.matchAll(/^# TYPE (\S+)/gm)].map((m) => m[1]!).filter((n) => !/^(process|nodejs)_/.test(n));
  assert.deepEqual(own.filter((n) => !n.startsWith("categorize_")), [], "every other family carries the categorize_ prefix");
});

test("every metric family of common/metrics.ts has a dashboard panel", async () => {
  const exported = await exportedMetrics();
  assert.ok(exported.families.length >= 40, `only ${exported.families.length} families found`);
  const shown = new Set<string>();
  for (const d of readDashboards()) {
    for (const e of d.exprs) {
      for (const n of metricNamesIn(e.expr)) {
        const f = familyOf(n, exported);
        if (f !== undefined) shown.add(f);
      }
    }
  }
  const missing = [...exported.families, ...REQUIRED_PROCESS_METRICS].filter((f) => !shown.has(f));
  assert.deepEqual(missing, [], "metric families without a dashboard panel");
});

test("every dashboard expression is valid PromQL (promtool)", { skip: promtoolSkipReason() }, () => {
  const promtool = findPromtool();
  assert.ok(promtool !== undefined, "promtool not found (check.sh installs it)");
  const exprs = readDashboards().flatMap((d) => d.exprs);
  // Substitute Grafana variables, then let promtool parse each as a rule.
  const substitute = (e: string) =>
    e
      .replace(/\$__rate_interval|\$__interval|\$\{__rate_interval\}/g, "5m")
      .replace(/\$\{[^}]*\}|\$\w+/g, ".*");
  const lines = ["groups:", "  - name: dashboard-exprs", "    rules:"];
  exprs.forEach((e, i) => {
    lines.push(`      - record: dashboard:expr_${i}:check`, `        expr: ${JSON.stringify(substitute(e.expr))}`);
  });
  const dir = mkdtempSync(path.join(tmpdir(), "categorize-dash-"));
  try {
    const file = path.join(dir, "dashboard-exprs.yml");
    writeFileSync(file, lines.join("\n") + "\n");
    const r = spawnSync(promtool, ["check", "rules", file], { encoding: "utf8" });
    assert.equal(r.status, 0, `promtool rejected a dashboard expression:\n${r.stdout}\n${r.stderr}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

test("dashboards are well formed: schemaVersion >= 39, datasource by uid variable, unique ids", () => {
  const uids = new Set<string>();
  for (const d of readDashboards()) {
    const { json, file } = d;
    assert.ok(typeof json.schemaVersion === "number" && json.schemaVersion >= 39, `${file} schemaVersion`);
    assert.equal(typeof json.uid, "string", `${file} uid`);
    assert.ok(!uids.has(String(json.uid)), `${file} duplicate uid`);
    uids.add(String(json.uid));
    assert.equal(json.id, undefined, `${file} must not pin a database id`);
    const vars = asArray(field(json.templating, "list"));
    const ds = vars.find((v) => field(v, "name") === "datasource");
    assert.equal(field(ds, "type"), "datasource", `${file} needs a datasource variable`);
    assert.equal(field(ds, "query"), "prometheus", `${file} datasource variable type`);
    const ids = new Set<number>();
    for (const p of d.panels) {
      const id = Number(p.id);
      assert.ok(Number.isInteger(id) && !ids.has(id), `${file} panel id ${String(p.id)} missing or duplicated`);
      ids.add(id);
      const [x, w, h] = ["x", "w", "h"].map((k) => field(p.gridPos, k));
      assert.ok(typeof x === "number" && typeof w === "number" && typeof h === "number", `${file} "${String(p.title)}" gridPos`);
      assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `${file} "${String(p.title)}" gridPos out of the 24-column grid`);
      if (p.type === "row") continue;
      assert.ok(typeof p.title === "string" && p.title !== "", `${file} panel ${id} title`);
      assert.equal(field(p.datasource, "uid"), "${datasource}", `${file} "${String(p.title)}" datasource`);
      const targets = asArray(p.targets);
      assert.ok(targets.length > 0, `${file} "${String(p.title)}" has no query`);
      for (const t of targets) {
        assert.equal(field(field(t, "datasource"), "uid"), "${datasource}", `${file} "${String(p.title)}" target datasource`);
      }
    }
  }
});

test("every alert has severity, summary, description and a runbook section", async () => {
  const load = await yamlLoader();
  const anchors = markdownAnchors(RUNBOOK);
  const alerts = readRules(load, "alerts.yml").filter((r) => r.alert !== undefined);
  assert.ok(alerts.length >= 15, `only ${alerts.length} alerts`);
  for (const a of alerts) {
    const name = a.alert ?? "";
    assert.match(name, /^Categorize[A-Za-z0-9]+$/, `alert name ${name}`);
    assert.ok(["critical", "warning", "info"].includes(String(a.labels.severity)), `${name} severity`);
    for (const key of ["summary", "description", "runbook_url"]) {
      assert.ok(typeof a.annotations[key] === "string" && a.annotations[key] !== "", `${name} annotation ${key}`);
    }
    const url = String(a.annotations.runbook_url);
    assert.equal(url, `docs/runbook.md#${name.toLowerCase()}`, `${name} runbook_url`);
    assert.ok(anchors.has(name.toLowerCase()), `docs/runbook.md has no section for ${name}`);
  }
});

test("every alert has a promtool test where it fires and one where it does not", async () => {
  const load = await yamlLoader();
  const alerts = new Set(readRules(load, "alerts.yml").flatMap((r) => (r.alert === undefined ? [] : [r.alert])));
  const fires = new Set<string>();
  const quiet = new Set<string>();
  const dir = path.join(PROM_DIR, "tests");
  const files = readdirSync(dir).filter((f) => f.endsWith(".yml"));
  assert.ok(files.length > 0, "no promtool test files");
  for (const f of files) {
    const doc = load(readFileSync(path.join(dir, f), "utf8"));
    const ruleFiles = asArray(field(doc, "rule_files")).map(String);
    assert.ok(ruleFiles.includes("../rules/alerts.yml") && ruleFiles.includes("../rules/recording.yml"), `${f} rule_files`);
    for (const t of asArray(field(doc, "tests"))) {
      for (const a of asArray(field(t, "alert_rule_test"))) {
        const name = String(field(a, "alertname"));
        assert.ok(alerts.has(name), `${f} tests unknown alert ${name}`);
        (asArray(field(a, "exp_alerts")).length > 0 ? fires : quiet).add(name);
      }
    }
  }
  assert.deepEqual([...alerts].filter((a) => !fires.has(a)), [], "alerts without a firing test case");
  assert.deepEqual([...alerts].filter((a) => !quiet.has(a)), [], "alerts without a not-firing test case");
});

test("the OpenTelemetry Collector log example wires defined components only", async () => {
  const load = await yamlLoader();
  const doc = load(readFileSync(path.join(REPO, "infra/logging/otel-collector.yaml"), "utf8"));
  const pipelines = field(field(doc, "service"), "pipelines");
  assert.ok(typeof pipelines === "object" && pipelines !== null, "service.pipelines missing");
  for (const [name, pipeline] of Object.entries(pipelines as Record<string, unknown>)) {
    for (const kind of ["receivers", "processors", "exporters"]) {
      const defined = field(doc, kind);
      for (const id of asArray(field(pipeline, kind)).map(String)) {
        assert.ok(field(defined, id) !== undefined, `pipeline ${name} uses undefined ${kind} ${id}`);
      }
    }
  }
  for (const [id, receiver] of Object.entries((field(doc, "receivers") ?? {}) as Record<string, unknown>)) {
    const ops = asArray(field(receiver, "operators")).map((o) => String(field(o, "type")));
    assert.ok(ops.includes("json_parser") && ops.includes("severity_parser") && ops.includes("time_parser"), `${id} must parse pino JSON`);
  }
});

// ------------------------------------------------------ scrape configurations --

/** The categorize-edge / categorize-core jobs of a Prometheus config file in infra/prometheus. */
function categorizeJobs(load: YamlLoad, file: string): Map<string, unknown> {
  const doc = load(readFileSync(path.join(PROM_DIR, file), "utf8"));
  const jobs = new Map<string, unknown>();
  for (const job of asArray(field(doc, "scrape_configs"))) {
    const name = asString(field(job, "job_name")) ?? "";
    if (name.startsWith("categorize-")) jobs.set(name, job);
  }
  assert.deepEqual([...jobs.keys()].sort(), ["categorize-core", "categorize-edge"], `${file} scrape jobs`);
  return jobs;
}

function staticTargets(job: unknown): string[] {
  return asArray(field(job, "static_configs")).flatMap((c) => asArray(field(c, "targets")).map(String));
}

test("static scrape configs target the nodes' admin ports, never the public ones", async () => {
  const load = await yamlLoader();
  // Local (infra/local/observe.sh): each role's ADMIN_PORT, as the script starts it.
  const observe = readFileSync(path.join(REPO, "infra/local/observe.sh"), "utf8");
  const local = categorizeJobs(load, "prometheus.yml");
  for (const role of ["edge", "core"]) {
    const m = new RegExp(`PORT=(\\d+) ADMIN_PORT=(\\d+) .*serve ${role}`).exec(observe);
    assert.ok(m?.[1] !== undefined && m[2] !== undefined, `observe.sh starts the ${role} with PORT and ADMIN_PORT`);
    assert.notEqual(m[1], m[2]);
    const job = local.get(`categorize-${role}`);
    assert.equal(field(job, "metrics_path"), "/metrics");
    assert.deepEqual(staticTargets(job), [`127.0.0.1:${m[2]}`], `prometheus.yml categorize-${role} scrapes the ${role}'s admin port`);
  }
  // Compose: the node services on 9464, and compose runs Prometheus with that file.
  const compose = readFileSync(path.join(REPO, "infra/compose.yaml"), "utf8");
  assert.match(compose, /--config\.file=\/etc\/prometheus\/prometheus-compose\.yml/);
  const inCompose = categorizeJobs(load, "prometheus-compose.yml");
  assert.deepEqual(staticTargets(inCompose.get("categorize-edge")), ["edge-1:9464", "edge-2:9464"]);
  assert.deepEqual(staticTargets(inCompose.get("categorize-core")), ["core-1:9464", "core-2:9464"]);
  for (const [name, job] of inCompose) assert.equal(field(job, "metrics_path"), "/metrics", name);
});

test("the Kubernetes scrape config keeps only the container port named admin", async () => {
  const load = await yamlLoader();
  for (const [name, job] of categorizeJobs(load, "prometheus-k8s.yml")) {
    const relabels = asArray(field(job, "relabel_configs"));
    const keeps = relabels.filter((r) => field(r, "action") === "keep");
    const byPort = keeps.filter((r) => asArray(field(r, "source_labels")).some((l) => String(l).startsWith("__meta_kubernetes_pod_container_port_")));
    assert.deepEqual(
      byPort.map((r) => [asArray(field(r, "source_labels")).map(String), field(r, "regex")]),
      [[["__meta_kubernetes_pod_container_port_name"], "admin"]],
      `${name}: one keep on the port name admin`,
    );
    // The pod labels of infra/k8s/base: app.kubernetes.io/name=categorize, component=edge|core.
    const role = name.replace("categorize-", "");
    assert.ok(
      keeps.some(
        (r) =>
          asArray(field(r, "source_labels")).join() === "__meta_kubernetes_pod_label_app_kubernetes_io_name,__meta_kubernetes_pod_label_app_kubernetes_io_component" &&
          field(r, "regex") === `categorize;${role}`,
      ),
      `${name}: keeps pods labelled app.kubernetes.io/name=categorize, component=${role}`,
    );
  }
});
