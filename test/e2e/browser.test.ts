import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { RunningNode } from "../../cli/start-node.js";
import { imagesDir, readExpectations, readImage } from "../support/fixtures.js";
import { repoRoot, startTestNode } from "../support/nodes.js";
import { describeRun, killChildren, requiredTool, run } from "./support/tools.js";

// Debian's chromium (infra/local/tools.sh chromium); Playwright's own browser downloads are not used.
const CHROMIUM = "/usr/bin/chromium";
const browser = requiredTool("chromium", existsSync(CHROMIUM) ? CHROMIUM : undefined, "run infra/local/tools.sh chromium");
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];
// Artifacts (gitignored): screenshots of what the page showed.
const resultsDir = join(repoRoot, "test-results");

/** The page is served from dist/web: build it when it is missing or older than web/. */
async function ensurePageBuilt(): Promise<void> {
  const mtime = (p: string) => (existsSync(p) ? statSync(p).mtimeMs : -1);
  const built = Math.min(mtime(join(repoRoot, "dist", "web", "app.js")), mtime(join(repoRoot, "dist", "web", "index.html")));
  const source = Math.max(mtime(join(repoRoot, "web", "app.ts")), mtime(join(repoRoot, "web", "index.html")));
  if (built >= source && built > 0) return;
  const r = await run("npm", ["run", "--silent", "build:web"], { timeoutMs: 120_000 });
  assert.equal(r.code, 0, describeRun("npm run build:web", r));
}

/** Resolves within ms or gives up (so a stuck browser cannot hang the run). */
async function bounded<T>(p: Promise<T>, ms: number, what: string): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => {
      process.emitWarning(`${what} did not finish within ${ms} ms`);
      resolve(undefined);
    }, ms);
  });
  try {
    return await Promise.race([p, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** The origin of a request URL; blob: URLs carry their creator's origin, data: URLs never reach a network. */
function originOf(url: string): string | undefined {
  const u = new URL(url);
  if (u.protocol === "data:") return undefined;
  if (u.protocol === "blob:") return new URL(u.pathname).origin;
  return u.origin;
}

describe("the browser page (Playwright + Debian chromium)", { skip: browser.skip, timeout: 180_000 }, () => {
  let node: RunningNode | undefined;
  let context: BrowserContext | undefined;
  let page: Page | undefined;
  let userDataDir: string | undefined;
  const requests: { method: string; url: string }[] = [];
  const pageErrors: string[] = [];
  const consoleProblems: string[] = [];

  /** The queue row of a file. */
  const row = (name: string) => page!.locator(`#queue li.item[data-name="${name}"]`);

  before(async () => {
    const executablePath = browser.require();
    await ensurePageBuilt();
    mkdirSync(resultsDir, { recursive: true });
    node = await startTestNode("all");
    userDataDir = mkdtempSync(join(tmpdir(), "categorize-e2e-chromium-"));
    context = await chromium.launchPersistentContext(userDataDir, { executablePath, headless: true, args: CHROMIUM_ARGS, timeout: 60_000 });
    // Every request of every page, worker or frame of the context.
    context.on("request", (req) => requests.push({ method: req.method(), url: req.url() }));
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(30_000);
    page.on("pageerror", (err) => pageErrors.push(String(err)));
    // A request the CSP blocks never reaches the network (no request event): it shows up in the console.
    page.on("console", (msg) => {
      if (/Content Security Policy|Refused to/i.test(msg.text())) consoleProblems.push(msg.text());
    });
  });

  after(async () => {
    if (context !== undefined) await bounded(context.close(), 15_000, "closing chromium");
    if (userDataDir !== undefined) rmSync(userDataDir, { recursive: true, force: true });
    killChildren();
    await node?.stop();
  });

  it("loads the page at / with its content security policy", async () => {
    const res = await page!.goto(`${node!.url}/`, { waitUntil: "load" });
    assert.equal(res?.status(), 200);
    assert.match(res.headers()["content-security-policy"] ?? "", /default-src 'self'/);
    assert.equal(await page!.title(), "categorize");
    assert.equal(await page!.locator("#file").count(), 1);
  });

  it("classifies 3 photos picked at once: 3 right answers with bars, cached flag and time", async () => {
    const p = page!;
    const photos = ["bald_eagle.jpeg", "coffee.png", "china.jpg"];
    await p.locator("#file").setInputFiles(photos.map((f) => join(imagesDir, f)));
    assert.equal(await p.locator("#queue li.item").count(), 3);
    for (const f of photos) await row(f).and(p.locator('[data-state="done"]')).waitFor();
    const accepted = new Map(readExpectations().map((e) => [e.file, e.acceptTop1]));
    for (const f of photos) {
      const r = row(f);
      const top1 = Number(await r.getAttribute("data-top1"));
      assert.ok(accepted.get(f)!.includes(top1), `${f}: top-1 ${top1}, accepted ${accepted.get(f)!.join("|")}`);
      assert.equal(await r.locator("tr.label").count(), 5);
      assert.match((await r.locator("tr.label .score").first().innerText()).trim(), /^\d{1,3}\.\d %$/);
      assert.match(await r.locator(".cached").innerText(), /^(cached|new)$/);
      assert.match(await r.locator(".time").innerText(), /\d+ ms/);
      assert.equal(await r.locator(".thumb img").count(), 1);
    }
    assert.equal((await row("bald_eagle.jpeg").locator("tr.label .name").first().innerText()).trim(), "bald eagle");
    await p.screenshot({ path: join(resultsDir, "e2e-browser-queue-done.png"), fullPage: true });
    assert.ok(requests.some((r) => r.method === "POST" && r.url === `${node!.url}/categorize.v1.CategorizeService/Classify`), JSON.stringify(requests));
  });

  it("records a review: 'wrong, it is …' with the class picker, then 'correct'; the quality panel follows GetQuality", async () => {
    const p = page!;
    const coffee = row("coffee.png");
    await coffee.locator("button.wrong").click();
    const picker = coffee.locator("input.class-picker");
    await picker.waitFor({ state: "visible" });
    // The picker's list holds every class of the model.
    await p.waitForFunction(() => document.querySelectorAll("#classes option").length === 1000);
    await picker.fill("968 cup");
    await picker.press("Enter");
    await coffee.locator(".recorded").filter({ hasText: "recorded: wrong, it is cup" }).waitFor();
    await p.locator("#q-reviewed").filter({ hasText: /^1$/ }).waitFor();
    assert.equal(await p.locator("#q-accuracy").innerText(), "0.0 %");
    assert.match(await p.locator("#q-wrong").innerText(), /cup \(968\): 1/);
    await p.screenshot({ path: join(resultsDir, "e2e-browser-review-wrong.png"), fullPage: true });
    assert.equal(await picker.isHidden(), true, "the picker closes once the verdict is recorded");
    await row("bald_eagle.jpeg").locator("button.correct").click();
    const eagleStatus = row("bald_eagle.jpeg").locator(".recorded");
    await eagleStatus.filter({ hasText: /recorded/ }).waitFor();
    assert.equal(await eagleStatus.innerText(), "recorded: correct (bald eagle)");
    await p.locator("#q-reviewed").filter({ hasText: /^2$/ }).waitFor();
    // (22,22) (968,967): accuracy 1/2; classes 22: P=R=1, 967: P=0 R=0, 968: P=0 R=0 -> macro 1/3.
    assert.equal(await p.locator("#q-accuracy").innerText(), "50.0 %");
    assert.equal(await p.locator("#q-precision").innerText(), "33.3 %");
    assert.equal(await p.locator("#q-f1").innerText(), "33.3 %");
    assert.match(await p.locator("#q-window").innerText(), /last 168 h/);
    // The same figures the core holds (and its gauges export).
    const q = await node!.core!.feedback.quality();
    assert.equal(q.samples, 2);
    assert.equal(q.accuracy, 0.5);
    await p.screenshot({ path: join(resultsDir, "e2e-browser-quality.png"), fullPage: true });
  });

  it("shows a bad file's error in words while the rest complete (a large one over ClassifyUpload)", async () => {
    const p = page!;
    await p.locator("#file").setInputFiles([
      { name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("shopping list: milk, eggs\n") },
      { name: "astronaut.png", mimeType: "image/png", buffer: readImage("astronaut.png") },
      { name: "flower.jpg", mimeType: "image/jpeg", buffer: readImage("flower.jpg") },
    ]);
    const bad = row("notes.txt");
    await bad.and(p.locator('[data-state="failed"]')).waitFor();
    assert.equal((await bad.locator(".state").innerText()).trim(), "failed: not a recognised image format; send JPEG, PNG, WebP, GIF, AVIF or TIFF");
    assert.equal(await bad.locator(".state").getAttribute("role"), "alert", "the error is announced to assistive technology");
    await row("astronaut.png").and(p.locator('[data-state="done"]')).waitFor();
    await row("flower.jpg").and(p.locator('[data-state="done"]')).waitFor();
    assert.ok(requests.some((r) => r.method === "POST" && r.url === `${node!.url}/categorize.v1.CategorizeService/ClassifyUpload`), "the large image went over ClassifyUpload");
    await p.screenshot({ path: join(resultsDir, "e2e-browser-error.png"), fullPage: true });
  });

  it("opens a result's sha256 link and shows its stored answer (GetResult)", async () => {
    const p = page!;
    const sha = await row("bald_eagle.jpeg").getAttribute("data-sha256");
    assert.match(sha ?? "", /^[0-9a-f]{64}$/);
    // A fresh load of the link, as someone it was sent to would open it.
    await p.goto(`${node!.url}/#/result/${sha}`, { waitUntil: "load" });
    const stored = p.locator("#stored");
    await stored.locator("tr.label").first().waitFor();
    assert.equal((await stored.locator("tr.label .name").first().innerText()).trim(), "bald eagle");
    assert.match(await stored.locator(".sha").innerText(), new RegExp(sha!));
    assert.ok(requests.some((r) => r.url === `${node!.url}/categorize.v1.CategorizeService/GetResult`));
    await p.screenshot({ path: join(resultsDir, "e2e-browser-stored-answer.png"), fullPage: true });
    await p.goto(`${node!.url}/#/result/${"0".repeat(64)}`, { waitUntil: "load" });
    await stored.locator(".error").filter({ hasText: /^No stored answer: / }).waitFor();
  });

  it("takes 200 files at once: at most 4 in flight, the page stays responsive, every one completes", async () => {
    const p = page!;
    await p.locator("#clear").click();
    assert.equal(await p.locator("#queue li.item").count(), 0, "clear finished empties a finished queue");
    const eagle = readImage("bald_eagle.jpeg");
    await p.locator("#file").setInputFiles(Array.from({ length: 200 }, (_, i) => ({ name: `many-${i}.jpeg`, mimeType: "image/jpeg", buffer: eagle })));
    // Sampled in the page: the rows in progress, and how late a 20 ms timer fires (a blocked main thread shows here).
    const seen = await p.evaluate(async () => {
      let maxBusy = 0;
      let maxLagMs = 0;
      const started = performance.now();
      for (;;) {
        const busy = document.querySelectorAll('#queue li[data-state="uploading"], #queue li[data-state="classifying"]').length;
        maxBusy = Math.max(maxBusy, busy);
        const finished = document.querySelectorAll('#queue li[data-state="done"], #queue li[data-state="failed"]').length;
        if (finished === 200 || performance.now() - started > 120_000) return { maxBusy, maxLagMs, finished, failed: document.querySelectorAll('#queue li[data-state="failed"]').length };
        const t = performance.now();
        await new Promise((r) => setTimeout(r, 20));
        maxLagMs = Math.max(maxLagMs, performance.now() - t - 20);
      }
    });
    assert.equal(seen.finished, 200, JSON.stringify(seen));
    assert.equal(seen.failed, 0, JSON.stringify(seen));
    assert.ok(seen.maxBusy >= 1 && seen.maxBusy <= 4, JSON.stringify(seen));
    // Generous: the 2 shared CPUs also run the node and chromium's software rendering.
    assert.ok(seen.maxLagMs < 1000, `the main thread was blocked ${seen.maxLagMs.toFixed(0)} ms`);
    process.stdout.write(`# 200 files: at most ${seen.maxBusy} in flight, longest main-thread stall ${seen.maxLagMs.toFixed(0)} ms\n`);
    assert.match(await p.locator("#summary").innerText(), /^200 files: 200 done, 0 failed/);
    await p.screenshot({ path: join(resultsDir, "e2e-browser-200-files.png") });
    await p.locator("#clear").click();
  });

  it("is readable on a narrow screen (no sideways scrolling) and usable from the keyboard", async () => {
    const p = page!;
    await p.setViewportSize({ width: 360, height: 780 });
    await p.goto(`${node!.url}/`, { waitUntil: "load" });
    await p.locator("#file").setInputFiles(join(imagesDir, "chelsea.png"));
    await row("chelsea.png").and(p.locator('[data-state="done"]')).waitFor();
    const widths = await p.evaluate(() => [document.documentElement.scrollWidth, window.innerWidth]);
    assert.ok(widths[0]! <= widths[1]!, `page ${widths[0]} px wide in a ${widths[1]} px window`);
    // Tab reaches the review buttons; Enter presses them.
    const correct = row("chelsea.png").locator("button.correct");
    for (let i = 0; i < 20 && !(await correct.evaluate((b) => b === document.activeElement)); i++) await p.keyboard.press("Tab");
    assert.ok(await correct.evaluate((b) => b === document.activeElement), "the correct button is reachable with Tab");
    await p.keyboard.press("Enter");
    await row("chelsea.png").locator(".recorded").filter({ hasText: /^recorded: / }).waitFor();
    await p.screenshot({ path: join(resultsDir, "e2e-browser-narrow.png"), fullPage: true });
    await p.setViewportSize({ width: 1280, height: 800 });
  });

  it(
    "lays the drop zone out as a box that covers none of the text around it",
    async () => {
      const p = page!;
      const box = async (selector: string) => {
        const b = await p.locator(selector).boundingBox();
        assert.ok(b !== null, `${selector} is laid out`);
        return b;
      };
      const overlaps = (a: { x: number; y: number; width: number; height: number }, b: typeof a) =>
        a.x < b.x + b.width && b.x < a.x + a.width && a.y < b.y + b.height && b.y < a.y + a.height;
      const drop = await box("#drop");
      for (const other of ["body > p", "#summary"]) assert.ok(!overlaps(drop, await box(other)), `#drop overlaps ${other}`);
    },
  );

  it("made no request to any other origin, and no script error or CSP violation", () => {
    const own = new URL(node!.url).origin;
    assert.ok(requests.length >= 3, `requests seen: ${JSON.stringify(requests)}`);
    const foreign = requests.filter((r) => {
      const o = originOf(r.url);
      return o !== undefined && o !== own;
    });
    assert.deepEqual(foreign, [], `requests to other origins than ${own}`);
    assert.deepEqual(pageErrors, []);
    assert.deepEqual(consoleProblems, []);
  });
});
