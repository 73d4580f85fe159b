import assert from "node:assert/strict";
import { spawn, type ChildProcess } from "node:child_process";
import { createHash } from "node:crypto";
import { copyFile, mkdir, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { after, before, describe, it } from "node:test";
import type { RunningNode } from "../../cli/start-node.js";
import { imageNames, imagesDir, readExpectations, readImage } from "../support/fixtures.js";
import { repoRoot, startTestNode } from "../support/nodes.js";

/** What a finished CLI process left behind. */
interface Run {
  readonly code: number | null;
  readonly stdout: string;
  readonly stderr: string;
}

const children = new Set<ChildProcess>();

/** Runs `categorize ARGS` from the sources, the way a user in the checkout does, with pipes (not a terminal) for output. */
function categorize(...args: string[]): Promise<Run> {
  const child = spawn(process.execPath, ["--import", "tsx", join("cli", "main.ts"), ...args], { cwd: repoRoot, stdio: ["ignore", "pipe", "pipe"] });
  children.add(child);
  let stdout = "";
  let stderr = "";
  child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
  child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
  return new Promise((resolve, reject) => {
    child.once("error", reject);
    child.once("close", (code) => {
      children.delete(child);
      resolve({ code, stdout, stderr });
    });
  });
}

function csvRows(stdout: string): Record<string, string>[] {
  const [header, ...lines] = stdout.trim().split("\n");
  const names = header!.split(",");
  return lines.map((line) => Object.fromEntries(line.split(",").map((v, i): [string, string] => [names[i]!, v])));
}

const sha256 = (b: Buffer) => createHash("sha256").update(b).digest("hex");

describe("categorize classify (the command line against a running node)", () => {
  let node: RunningNode | undefined;
  let scratch: string | undefined;
  // As the README writes it: the shared photos beside the checkout.
  const photos = relative(repoRoot, imagesDir);

  before(async () => {
    node = await startTestNode("all");
    scratch = await mkdtemp(join(tmpdir(), "categorize-cli-"));
  });
  after(async () => {
    for (const child of children) child.kill("SIGKILL");
    if (scratch !== undefined) await rm(scratch, { recursive: true, force: true });
    await node?.stop();
  });

  it("prints one CSV row per photo of a folder with path, sha256, top-1 index, label, score and cached, skipping non-image files", async () => {
    const run = await categorize("classify", photos, "--edge", node!.url, "--format", "csv");
    assert.equal(run.code, 0, run.stderr);
    assert.equal(run.stdout.split("\n")[0], "path,sha256,top1_index,label,score,cached,category");
    const rows = csvRows(run.stdout);
    // expected.tsv lives in the same folder and is not an image.
    assert.deepEqual(rows.map((r) => r.path).sort(), imageNames().map((n) => join(photos, n)));
    for (const row of rows) {
      const name = row.path!.slice(photos.length + 1);
      assert.equal(row.sha256, sha256(readImage(name)), name);
      assert.match(row.top1_index!, /^\d+$/);
      assert.ok(row.label !== "", name);
      assert.ok(Number(row.score) > 0 && Number(row.score) <= 1, `${name} score ${row.score}`);
      assert.match(row.cached!, /^(true|false)$/);
      assert.ok(row.category !== "", `${name}: a top category`);
      if (name === "bald_eagle.jpeg") assert.equal(row.category, "animal/bird");
      if (name === "coffee.png") assert.equal(row.category, "food");
      const accepted = readExpectations().find((e) => e.file === name)?.acceptTop1;
      if (accepted !== undefined) assert.ok(accepted.includes(Number(row.top1_index)), `${name}: top-1 ${row.top1_index} not in ${accepted.join("|")}`);
    }
    assert.match(run.stderr, /ok 7, failed 0, cached \d+/);
  });

  it("exits non-zero with the server's message for a file that is not an image, and still prints every other file", async () => {
    const dir = join(scratch!, "mixed");
    await mkdir(join(dir, "nested", "deeper"), { recursive: true });
    await writeFile(join(dir, "broken.jpg"), "this is text, not a JPEG\n");
    await writeFile(join(dir, "notes.txt"), "skipped: not an image extension\n");
    // Recursion and the extension's case: a photo two folders down, named in capitals.
    await copyFile(join(imagesDir, "bald_eagle.jpeg"), join(dir, "nested", "deeper", "EAGLE.JPG"));
    const run = await categorize("classify", dir, photos, "--edge", node!.url, "--format", "csv");
    assert.equal(run.code, 1);
    const paths = csvRows(run.stdout).map((r) => r.path);
    assert.equal(paths.length, imageNames().length + 1, run.stdout);
    assert.ok(paths.includes(join(dir, "nested", "deeper", "EAGLE.JPG")));
    assert.ok(!paths.some((p) => p!.endsWith("broken.jpg") || p!.endsWith("notes.txt")));
    assert.match(run.stderr, /broken\.jpg: \[invalid_argument\] not a recognised image format/);
    assert.doesNotMatch(run.stderr, /notes\.txt/);
    assert.match(run.stderr, new RegExp(`ok ${imageNames().length + 1}, failed 1, cached \\d+`));
  });

  it("writes no progress bar to a stderr that is not a terminal: only the summary line", async () => {
    const run = await categorize("classify", photos, "--edge", node!.url);
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /[\r\x1b]/);
    assert.match(run.stderr, /^ok 7, failed 0, cached \d+ \(7 files in [\d.]+ s\)\n$/);
    assert.doesNotMatch(run.stdout, /[\r\x1b]/);
    assert.equal(run.stdout.trim().split("\n").length, 1 + 7, "a header and one table row per photo");
  });

  it("keeps --json as one JSON object per line with the top-k labels", async () => {
    const run = await categorize("classify", join(photos, "coffee.png"), "--edge", node!.url, "--json", "--top-k", "3");
    assert.equal(run.code, 0, run.stderr);
    const lines = run.stdout.trim().split("\n");
    assert.equal(lines.length, 1);
    const answer = JSON.parse(lines[0]!) as { path: string; sha256: string; top1_index: number; labels: unknown[] };
    assert.equal(answer.path, join(photos, "coffee.png"));
    assert.equal(answer.sha256, sha256(readImage("coffee.png")));
    assert.equal(answer.top1_index, 967);
    assert.equal(answer.labels.length, 3);
  });

  it("evaluate classifies the labelled photos over the stream and ends with the quality figures the node recorded from its feedback", async () => {
    const run = await categorize("evaluate", photos, "--edge", node!.url);
    assert.equal(run.code, 0, run.stderr);
    const labelled = readExpectations().filter((e) => e.acceptTop1 !== undefined).length;
    const last = run.stdout.trim().split("\n").at(-1)!;
    const m = /^samples (\d+) {2}accuracy ([\d.]+) {2}macro precision ([\d.]+) {2}recall ([\d.]+) {2}F1 ([\d.]+)$/.exec(last);
    assert.ok(m !== null, last);
    assert.equal(Number(m[1]), labelled);
    const q = await node!.core!.feedback.quality();
    assert.equal(q.samples, labelled);
    assert.equal(m[2], q.accuracy.toFixed(3));
    assert.equal(m[5], q.macroF1.toFixed(3));
    assert.doesNotMatch(run.stderr, /[\r\x1b]/);
  });

  it("refuses an unknown format or a concurrency above the server's default stream window with exit code 2", async () => {
    const [format, concurrency] = await Promise.all([
      categorize("classify", photos, "--edge", node!.url, "--format", "xml"),
      categorize("classify", photos, "--edge", node!.url, "--concurrency", "17"),
    ]);
    assert.equal(format.code, 2);
    assert.match(format.stderr, /unknown format 'xml'/);
    assert.equal(concurrency.code, 2);
    assert.match(concurrency.stderr, /--concurrency needs a whole number from 1 to 16/);
    assert.equal(format.stdout + concurrency.stdout, "");
  });
});
