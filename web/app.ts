import { ConnectError, createClient } from "@connectrpc/connect";
import { createConnectTransport } from "@connectrpc/connect-web";
import { CategorizeService } from "../gen/categorize/v1/categorize_pb.js";

const client = createClient(CategorizeService, createConnectTransport({ baseUrl: window.location.origin, useBinaryFormat: true }));

const drop = document.getElementById("drop")!;
const input = document.getElementById("file") as HTMLInputElement;
const preview = document.getElementById("preview") as HTMLImageElement;
const table = document.getElementById("labels") as HTMLTableElement;
const errorBox = document.getElementById("error")!;
const meta = document.getElementById("meta")!;

async function classify(file: File): Promise<void> {
  errorBox.textContent = "";
  table.replaceChildren();
  meta.textContent = "classifying…";
  preview.src = URL.createObjectURL(file);
  preview.hidden = false;
  try {
    const res = await client.classify({ image: new Uint8Array(await file.arrayBuffer()), topK: 5 }, { timeoutMs: 30_000 });
    for (const label of res.labels) {
      const row = table.insertRow();
      row.className = "label";
      const name = row.insertCell();
      name.className = "name";
      name.textContent = label.name;
      const bar = document.createElement("div");
      bar.className = "bar";
      bar.style.width = `${Math.max(1, Math.round(label.score * 100))}%`;
      name.append(bar);
      const score = row.insertCell();
      score.className = "score";
      score.textContent = `${(label.score * 100).toFixed(1)} %`;
    }
    meta.textContent = `${res.model?.name ?? ""} ${res.model?.version ?? ""} · ${res.cached ? "cached" : `${(res.timings?.totalMs ?? 0).toFixed(1)} ms`} · sha256 ${res.sha256.slice(0, 12)}…`;
  } catch (err) {
    meta.textContent = "";
    const e = ConnectError.from(err);
    errorBox.textContent = `Could not classify this file: ${e.rawMessage}`;
  }
}

input.addEventListener("change", () => {
  const f = input.files?.[0];
  if (f !== undefined) void classify(f);
});
drop.addEventListener("dragover", (ev) => {
  ev.preventDefault();
  drop.classList.add("over");
});
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (ev) => {
  ev.preventDefault();
  drop.classList.remove("over");
  const f = ev.dataTransfer?.files[0];
  if (f !== undefined) void classify(f);
});
