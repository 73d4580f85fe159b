import assert from "node:assert/strict";
import { after, before, describe, it } from "node:test";
import type { NodeProcess } from "../support/nodes.js";
import { DEFAULT_RSS_CEILING_MB as RSS_CEILING_MB, formatReport, runFuzz, type Credentials } from "./support/fuzz-run.js";
import { alive, healthz } from "./support/proc.js";
import { spawnSecuredNode } from "./support/secured-node.js";

/**
 * Property-based fuzzing (fast-check) of an embedded node in a child process:
 * mutated real images through every classify method, random and
 * protobuf-shaped frames at the edge and at core, hostile strings and
 * credentials. Bounded here: FUZZ_RUNS cases (default 2000) or FUZZ_TIME_MS
 * (default 45 s), whichever comes first; FUZZ_SEED replays a run. The long
 * mode is `npm run fuzz -- --minutes=N` (bench/fuzz.ts).
 */

const numRuns = Number(process.env.FUZZ_RUNS ?? 2_000);
const timeLimitMs = Number(process.env.FUZZ_TIME_MS ?? 45_000);
const seed = process.env.FUZZ_SEED === undefined ? undefined : Number(process.env.FUZZ_SEED);

describe("fuzz: hostile bytes at the edge and at core", { timeout: timeLimitMs + 120_000 }, () => {
  let node: NodeProcess;
  let credentials: Credentials;

  before(async () => {
    ({ node, credentials } = await spawnSecuredNode());
  });
  after(async () => {
    await node?.kill();
  });

  it(`no crash, no hang past a deadline, RSS under ${RSS_CEILING_MB} MiB, only proper gRPC statuses, request ids echoed verbatim`, async (t) => {
    const report = await runFuzz({
      url: node.url,
      pid: node.child.pid!,
      numRuns,
      timeLimitMs,
      seed,
      rssCeilingMb: RSS_CEILING_MB,
      credentials,
      isAlive: () => alive(node),
    output: () => node.output(),
    });
    const text = formatReport(report);
    for (const line of text.split("\n")) t.diagnostic(line);
    assert.deepEqual(
      report.violations.map((v) => v.what),
      [],
      `${text}\nreplay with FUZZ_SEED=${report.seed}${report.violations[0]?.input === undefined ? "" : `\nfirst failing input: ${report.violations[0].input}`}`,
    );
    assert.ok(report.iterations >= Math.min(numRuns, 200), `only ${report.iterations} cases ran`);
    assert.ok(report.maxRssMb < RSS_CEILING_MB, `max RSS ${report.maxRssMb.toFixed(0)} MiB`);
    assert.ok(alive(node), "the node is alive");
    assert.equal(await healthz(node.url), 200);
  });
});
