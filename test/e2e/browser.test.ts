import assert from "node:assert/strict";
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import type { RunningNode } from "../../cli/start-node.js";
import { imagesDir } from "../support/fixtures.js";
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

  it("classifies bald_eagle.jpeg uploaded through the file input: top label bald eagle with its score", async () => {
    const p = page!;
    await p.locator("#file").setInputFiles(join(imagesDir, "bald_eagle.jpeg"));
    const rows = p.locator("#labels tr.label");
    await rows.first().waitFor({ state: "visible" });
    assert.equal(await rows.count(), 5, "top 5 labels shown");
    const top = rows.first();
    assert.equal((await top.locator(".name").innerText()).trim(), "bald eagle");
    const scoreText = (await top.locator(".score").innerText()).trim();
    const m = /^(\d{1,3}\.\d) %$/.exec(scoreText);
    assert.ok(m !== null, `score cell "${scoreText}"`);
    assert.ok(Number(m[1]) >= 90 && Number(m[1]) <= 100, `bald eagle at ${scoreText}`);
    // Scores are shown highest first.
    const scores = (await rows.locator(".score").allInnerTexts()).map((t) => Number.parseFloat(t));
    assert.deepEqual(scores, [...scores].sort((a, b) => b - a));
    assert.equal((await p.locator("#error").innerText()).trim(), "");
    await p.locator("#meta").filter({ hasText: "mobilenetv2-12-int8" }).waitFor();
    await p.screenshot({ path: join(resultsDir, "e2e-browser-bald-eagle.png"), fullPage: true });
    // The page called the API on its own origin (Connect, POST).
    assert.ok(requests.some((r) => r.method === "POST" && r.url === `${node!.url}/categorize.v1.CategorizeService/Classify`), JSON.stringify(requests));
  });

  it("shows a clear error in #error for a text file, and no labels", async () => {
    const p = page!;
    await p.locator("#file").setInputFiles({ name: "notes.txt", mimeType: "text/plain", buffer: Buffer.from("shopping list: milk, eggs\n") });
    const error = p.locator("#error");
    await error.filter({ hasText: /\S/ }).waitFor();
    const text = (await error.innerText()).trim();
    assert.match(text, /^Could not classify this file: not a recognised image format; send JPEG, PNG, WebP, GIF, AVIF or TIFF$/);
    assert.equal(await error.getAttribute("role"), "alert", "the error is announced to assistive technology");
    assert.equal(await p.locator("#labels tr.label").count(), 0, "the previous answer is cleared");
    await p.screenshot({ path: join(resultsDir, "e2e-browser-error.png"), fullPage: true });
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
      for (const other of ["body > p", "#error"]) assert.ok(!overlaps(drop, await box(other)), `#drop overlaps ${other}`);
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
