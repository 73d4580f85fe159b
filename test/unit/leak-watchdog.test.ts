import assert from "node:assert/strict";
import { execFile } from "node:child_process";
import { join } from "node:path";
import { describe, it } from "node:test";
import { repoRoot } from "../support/nodes.js";

interface Run {
  readonly code: number;
  readonly output: string;
}

/** Runs the leaky fixture file under node's test runner with the watchdog, as test/run.sh runs every file. */
function runFixture(leak: "none" | "socket" | "timer"): Promise<Run> {
  const env: Record<string, string | undefined> = { ...process.env, LEAK: leak, LEAK_GRACE_MS: "500" };
  // Inherited, it would make the inner runner act as a file's child process and speak its binary protocol.
  delete env.NODE_TEST_CONTEXT;
  delete env.LEAK_WATCHDOG;
  delete env.LEAK_WATCHDOG_IDLE;
  const args = ["--import", "tsx", "--import", "./test/support/leak-watchdog.ts", "--test", "--test-reporter=spec", join("test", "support", "leaky-test-file.ts")];
  return new Promise((resolve, reject) => {
    // The kill timeout only keeps a broken watchdog from hanging this suite; it is far above the grace.
    execFile(process.execPath, args, { cwd: repoRoot, env, timeout: 120_000, killSignal: "SIGKILL" }, (err, stdout, stderr) => {
      if (err !== null && typeof err.code !== "number") reject(new Error(`the child test run did not exit by itself (${err.message})`));
      else resolve({ code: err === null ? 0 : (err.code as number), output: `${stdout}\n${stderr}` });
    });
  });
}

describe("leak watchdog", () => {
  it("fails a test file that leaves a connected socket open, naming the socket, its test and the line that opened it", async () => {
    const run = await runFixture("socket");
    assert.notEqual(run.code, 0, run.output);
    assert.match(run.output, /\[leak-watchdog\] test\/support\/leaky-test-file\.ts: still running 500 ms after its last test/);
    assert.match(run.output, /- socket 127\.0\.0\.1:\d+ -> 127\.0\.0\.1:\d+/);
    assert.match(run.output, /- server listening on 127\.0\.0\.1:\d+/);
    assert.match(run.output, /created during test "leaves a resource open on purpose"/);
    assert.match(run.output, /leaky-test-file\.ts:\d+:\d+/);
    assert.match(run.output, /✔ leaves a resource open on purpose/, "the leaking test itself passed: the file fails for the leak");
  });

  it("fails a test file that leaves an interval running, naming its callback", async () => {
    const run = await runFixture("timer");
    assert.notEqual(run.code, 0, run.output);
    assert.match(run.output, /- setInterval of 60000 ms calling pollsForever\(\)/);
    assert.match(run.output, /created during test "leaves a resource open on purpose"/);
  });

  it("lets a test file that closes everything pass and says nothing", async () => {
    const run = await runFixture("none");
    assert.equal(run.code, 0, run.output);
    assert.doesNotMatch(run.output, /leak-watchdog/);
  });
});
