import { readFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { HttpRoute } from "../common/server/node-host.js";

// The page is built by `npm run build:web` into dist/web (both from source and in images).
const root = join(dirname(fileURLToPath(import.meta.url)), "..", ...(import.meta.url.includes("/dist/") ? ["web"] : ["dist", "web"]));

const assets: Record<string, string> = {
  "/": "index.html",
  "/index.html": "index.html",
  "/app.js": "app.js",
};
const types: Record<string, string> = { html: "text/html; charset=utf-8", js: "text/javascript; charset=utf-8" };

/** Serves the drop-an-image page; it calls CategorizeService through Connect-web. */
export function createPageRoute(): HttpRoute {
  const cache = new Map<string, Buffer>();
  return (req, res, url) => {
    const file = assets[url.pathname];
    if (file === undefined || (req.method !== "GET" && req.method !== "HEAD")) return false;
    const send = (body: Buffer) => {
      res.writeHead(200, {
        "content-type": types[file.split(".").pop() ?? ""] ?? "application/octet-stream",
        "content-security-policy": "default-src 'self'; img-src 'self' blob: data:; style-src 'self' 'unsafe-inline'; connect-src 'self'; frame-ancestors 'none'",
        "x-content-type-options": "nosniff",
        "referrer-policy": "no-referrer",
        "cache-control": "no-cache",
      });
      if (req.method === "HEAD") res.end();
      else res.end(body);
    };
    const cached = cache.get(file);
    if (cached !== undefined) {
      send(cached);
      return true;
    }
    readFile(join(root, file)).then(
      (body) => {
        cache.set(file, body);
        send(body);
      },
      () => {
        res.writeHead(503, { "content-type": "text/plain; charset=utf-8" });
        res.end("the page is not built: run `npm run build:web`\n");
      },
    );
    return true;
  };
}
