import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { CategorizeService, type ClassifyResponse, type GetQualityResponse } from "../gen/categorize/v1/categorize_pb.js";
import { classifyUpload } from "./connect-upload.js";

const client = createClient(CategorizeService, createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: true }));

/** Images in flight at once: enough to keep a 2-core node busy, few enough that a 200-file drop does not flood it. */
const MAX_IN_FLIGHT = 4;
/** Above this, an image goes over ClassifyUpload in chunks instead of one Classify message. */
const UPLOAD_ABOVE_BYTES = 512 * 1024;
const TOP_K = 5;
const IMAGE_NAME = /\.(jpe?g|png|webp|gif|avif|tiff?|heic|heif)$/i;

type State = "waiting" | "uploading" | "classifying" | "done" | "failed";

interface Item {
  readonly file: File;
  readonly row: HTMLLIElement;
  state: State;
  result?: ClassifyResponse;
}

const $ = (id: string) => document.getElementById(id)!;
const queueList = $("queue") as HTMLOListElement;
const summary = $("summary");
const classList = $("classes") as HTMLDataListElement;
const queue: Item[] = [];
let inFlight = 0;
let next = 0;
let seq = 0;
let classesLoaded = false;

const errorText = (err: unknown) => ConnectError.from(err).rawMessage;
const pct = (x: number) => `${(x * 100).toFixed(1)} %`;

function el<K extends keyof HTMLElementTagNameMap>(tag: K, props: Partial<HTMLElementTagNameMap[K]> = {}, ...children: (Node | string)[]): HTMLElementTagNameMap[K] {
  const e = Object.assign(document.createElement(tag), props);
  e.append(...children);
  return e;
}

/** Adds files to the queue; rows are appended in one fragment so a large drop costs one layout. */
function enqueue(files: readonly File[]): void {
  const frag = document.createDocumentFragment();
  for (const file of files) {
    const row = el("li", { className: "item" });
    row.dataset.name = file.name;
    const item: Item = { file, row, state: "waiting" };
    row.append(el("div", { className: "thumb" }), el("div", { className: "body" }, el("div", { className: "head" }, el("span", { className: "fname", textContent: file.name }), el("span", { className: "state" }))));
    setState(item, "waiting");
    queue.push(item);
    frag.append(row);
  }
  queueList.append(frag);
  updateSummary();
  pump();
}

function setState(item: Item, state: State, detail = ""): void {
  item.state = state;
  item.row.dataset.state = state;
  const s = item.row.querySelector(".state")!;
  s.textContent = state === "failed" ? `failed: ${detail}` : state;
  s.className = `state ${state}`;
  updateSummary();
}

function updateSummary(): void {
  const count = (s: State) => queue.filter((i) => i.state === s).length;
  summary.textContent = queue.length === 0 ? "" : `${queue.length} files: ${count("done")} done, ${count("failed")} failed, ${inFlight} in progress, ${count("waiting")} waiting`;
}

/** Starts waiting items while fewer than MAX_IN_FLIGHT run. */
function pump(): void {
  while (inFlight < MAX_IN_FLIGHT && next < queue.length) {
    const item = queue[next++]!;
    inFlight++;
    void run(item).finally(() => {
      inFlight--;
      pump();
    });
  }
  updateSummary();
}

/** A thumbnail made only when the item starts (not 200 decodes at once); its object URL is revoked once drawn. */
function thumbnail(item: Item): void {
  const url = URL.createObjectURL(item.file);
  // Decoded off the main thread: a full-size photo per row must not stall the page.
  const img = el("img", { alt: "", width: 64, height: 64, decoding: "async" });
  const done = () => URL.revokeObjectURL(url);
  img.addEventListener("load", done, { once: true });
  img.addEventListener("error", done, { once: true });
  img.src = url;
  item.row.querySelector(".thumb")!.replaceChildren(img);
}

async function run(item: Item): Promise<void> {
  thumbnail(item);
  const started = performance.now();
  try {
    setState(item, "uploading");
    const requestId = `page-${++seq}`;
    let res: ClassifyResponse;
    if (item.file.size > UPLOAD_ABOVE_BYTES) {
      const p = classifyUpload(item.file, { topK: TOP_K, requestId, timeoutMs: 120_000 });
      setState(item, "classifying");
      res = await p;
    } else {
      const image = new Uint8Array(await item.file.arrayBuffer());
      // The bytes are in the request once it is sent; the rest is the server's work.
      setState(item, "classifying");
      res = await client.classify({ image, topK: TOP_K, requestId }, { timeoutMs: 60_000 });
    }
    item.result = res;
    item.row.dataset.sha256 = res.sha256;
    item.row.dataset.top1 = String(res.labels[0]?.index ?? "");
    showResult(item.row.querySelector(".body")!, res, performance.now() - started);
    addReview(item);
    setState(item, "done");
    void loadClasses(res.sha256);
  } catch (err) {
    setState(item, "failed", errorText(err));
    item.row.querySelector(".state")!.setAttribute("role", "alert");
  }
}

/** Top-k labels with bars, cached or not, the time, and the result's own link. */
function showResult(into: Element, res: ClassifyResponse, ms: number | undefined): void {
  const table = el("table", { className: "labels" });
  for (const label of res.labels) {
    const row = table.insertRow();
    row.className = "label";
    const name = row.insertCell();
    name.className = "name";
    name.textContent = label.name;
    const bar = el("div", { className: "bar" });
    bar.style.width = `${Math.max(1, Math.round(label.score * 100))}%`;
    name.append(bar);
    const score = row.insertCell();
    score.className = "score";
    score.textContent = pct(label.score);
  }
  const time = ms === undefined ? `server ${(res.timings?.totalMs ?? 0).toFixed(1)} ms` : `${Math.round(ms)} ms (server ${(res.timings?.totalMs ?? 0).toFixed(1)} ms)`;
  const meta = el(
    "div",
    { className: "meta" },
    el("span", { className: "cached", textContent: res.cached ? "cached" : "new" }),
    " · ",
    el("span", { className: "time", textContent: time }),
    " · ",
    el("a", { className: "link", href: `#/result/${res.sha256}`, textContent: `sha256 ${res.sha256.slice(0, 12)}…` }),
  );
  into.append(table, meta);
}

/** "correct" and "wrong, it is …" with a searchable class picker; the verdict goes to SubmitFeedback. */
function addReview(item: Item): void {
  const res = item.result!;
  const box = el("div", { className: "review" });
  const status = el("span", { className: "recorded" });
  status.setAttribute("aria-live", "polite");
  const correct = el("button", { type: "button", className: "correct", textContent: "correct" });
  const wrong = el("button", { type: "button", className: "wrong", textContent: "wrong, it is …" });
  const picker = el("input", { className: "class-picker", type: "search", placeholder: "type to search the classes", hidden: true });
  picker.setAttribute("list", "classes");
  picker.setAttribute("aria-label", `true class of ${item.file.name}`);
  const send = el("button", { type: "button", className: "send", textContent: "send", hidden: true });
  const submit = async (trueClass: number, label: string) => {
    status.textContent = "sending…";
    try {
      await client.submitFeedback({ sha256: res.sha256, trueClass, source: "reviewer:page" }, { timeoutMs: 15_000 });
      status.textContent = `recorded: ${label}`;
      // The picker's suggestion list would stay open over the rows below.
      picker.hidden = true;
      send.hidden = true;
      item.row.dataset.reviewed = "true";
      void refreshQuality();
    } catch (err) {
      status.textContent = `not recorded: ${errorText(err)}`;
    }
  };
  correct.addEventListener("click", () => void submit(res.labels[0]!.index, `correct (${res.labels[0]!.name})`));
  wrong.addEventListener("click", () => {
    picker.hidden = false;
    send.hidden = false;
    picker.focus();
  });
  const choose = () => {
    const index = classIndexOf(picker.value);
    if (index === undefined) {
      status.textContent = "pick a class from the list (type part of its name)";
      return;
    }
    void submit(index, `wrong, it is ${classNames[index] ?? index}`);
  };
  send.addEventListener("click", choose);
  picker.addEventListener("keydown", (ev) => {
    if (ev.key === "Enter") choose();
  });
  box.append(correct, wrong, picker, send, status);
  item.row.querySelector(".body")!.append(box);
}

let classNames: string[] = [];

/** "123 name" from the picker (or an exact class name) to its index. */
function classIndexOf(value: string): number | undefined {
  const m = /^(\d+)\b/.exec(value.trim());
  if (m !== null && classNames[Number(m[1])] !== undefined) return Number(m[1]);
  const i = classNames.findIndex((n) => n.toLowerCase() === value.trim().toLowerCase());
  return i >= 0 ? i : undefined;
}

/** The model's class names: GetResult of a stored answer with every class (top_k 1000) carries them all. */
async function loadClasses(sha256: string): Promise<void> {
  if (classesLoaded) return;
  classesLoaded = true;
  try {
    const all = await client.getResult({ sha256, topK: 1000 }, { timeoutMs: 15_000 });
    const names: string[] = [];
    for (const l of all.labels) names[l.index] = l.name;
    classNames = names;
    const frag = document.createDocumentFragment();
    names.forEach((n, i) => frag.append(el("option", { value: `${i} ${n}` })));
    classList.replaceChildren(frag);
  } catch {
    // Tried again with the next answer.
    classesLoaded = false;
  }
}

/** The quality panel, from GetQuality: the figures /metrics exports. */
async function refreshQuality(): Promise<void> {
  const box = $("quality-error");
  try {
    const q: GetQualityResponse = await client.getQuality({ topWrong: 5 }, { timeoutMs: 15_000 });
    $("q-accuracy").textContent = pct(q.accuracy);
    $("q-precision").textContent = pct(q.macroPrecision);
    $("q-recall").textContent = pct(q.macroRecall);
    $("q-f1").textContent = pct(q.macroF1);
    $("q-reviewed").textContent = String(q.reviewed);
    $("q-window").textContent = `last ${q.windowHours} h (since ${new Date(Number(q.windowStartUnixMs)).toLocaleString()})`;
    const wrong = $("q-wrong");
    wrong.replaceChildren(...q.mostOftenWrong.map((w) => el("li", { textContent: `${w.label} (${w.index}): ${w.count}` })));
    if (q.mostOftenWrong.length === 0) wrong.append(el("li", { textContent: "none" }));
    box.textContent = "";
  } catch (err) {
    box.textContent = `Could not read the quality figures: ${errorText(err)}`;
  }
}

/** `#/result/<sha256>` opens that image's stored answer. */
async function showLinked(): Promise<void> {
  const m = /^#\/result\/([0-9a-f]{64})$/.exec(window.location.hash);
  const panel = $("stored");
  if (m === null) {
    panel.hidden = true;
    return;
  }
  panel.hidden = false;
  const body = $("stored-body");
  body.replaceChildren(el("p", { textContent: `Loading the stored answer for ${m[1]}…` }));
  try {
    const res = await client.getResult({ sha256: m[1]!, topK: TOP_K }, { timeoutMs: 15_000 });
    body.replaceChildren(el("p", { className: "sha", textContent: `sha256 ${res.sha256} · ${res.model?.name ?? ""} ${res.model?.version ?? ""}` }));
    showResult(body, res, undefined);
  } catch (err) {
    body.replaceChildren(el("p", { className: "error", textContent: `No stored answer: ${errorText(err)}` }));
  }
  panel.focus();
}

/** Every file of a dropped folder, at any depth (image names only). */
async function filesOf(entry: FileSystemEntry): Promise<File[]> {
  if (entry.isFile) {
    const file = await new Promise<File>((resolve, reject) => (entry as FileSystemFileEntry).file(resolve, reject));
    return [file];
  }
  const reader = (entry as FileSystemDirectoryEntry).createReader();
  const out: File[] = [];
  for (;;) {
    const batch = await new Promise<FileSystemEntry[]>((resolve, reject) => reader.readEntries(resolve, reject));
    if (batch.length === 0) break;
    for (const e of batch) if (e.isDirectory || IMAGE_NAME.test(e.name)) out.push(...(await filesOf(e)));
  }
  return out;
}

const drop = $("drop");
for (const id of ["file", "folder"]) {
  const input = $(id) as HTMLInputElement;
  input.addEventListener("change", () => {
    const files = input.files === null ? [] : Array.from(input.files);
    // A folder pick lists every file; only images go to the queue.
    enqueue(id === "folder" ? files.filter((f) => IMAGE_NAME.test(f.name)) : files);
    input.value = "";
  });
}
drop.addEventListener("dragover", (ev) => {
  ev.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const dt = ev.dataTransfer;
  if (dt === null) return;
  const entries = Array.from(dt.items).map((i) => i.webkitGetAsEntry()).filter((e): e is FileSystemEntry => e !== null && e !== undefined);
  if (entries.some((e) => e.isDirectory)) {
    void Promise.all(entries.map(filesOf)).then((lists) => enqueue(lists.flat()));
  } else enqueue(Array.from(dt.files));
});
$("clear").addEventListener("click", () => {
  // Only finished rows go; running ones would lose their answer.
  for (let i = queue.length - 1; i >= 0; i--) {
    const item = queue[i]!;
    if (item.state === "done" || item.state === "failed") {
      item.row.remove();
      queue.splice(i, 1);
      if (i < next) next--;
    }
  }
  updateSummary();
});
window.addEventListener("hashchange", () => void showLinked());
void showLinked();
void refreshQuality();
