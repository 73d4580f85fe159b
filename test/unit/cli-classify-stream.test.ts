import assert from "node:assert/strict";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { after, before, describe, it } from "node:test";
import { create, type MessageInitShape } from "@bufbuild/protobuf";
import type { Client } from "@connectrpc/connect";
import { classifyFiles, type FileOutcome } from "../../cli/classify-stream.js";
import { createAsyncQueue } from "../../common/async-queue.js";
import {
  ClassifyResponseSchema,
  ClassifyStreamResponseSchema,
  type CategorizeService,
  type ClassifyRequestSchema,
  type ClassifyStreamResponse,
} from "../../gen/categorize/v1/categorize_pb.js";

/**
 * A ClassifyStream server in memory: answers each image after a delay that
 * shrinks with its position (so answers overtake each other), echoes the
 * image's text as sha256, rejects images that say "bad", and records the
 * most images it held at once.
 */
function fakeEdge(): { client: Client<typeof CategorizeService>; maxHeld: () => number } {
  let held = 0;
  let maxHeld = 0;
  const classifyStream = (requests: AsyncIterable<MessageInitShape<typeof ClassifyRequestSchema>>) => {
    const out = createAsyncQueue<ClassifyStreamResponse>();
    void (async () => {
      const answers: Promise<void>[] = [];
      let n = 0;
      for await (const req of requests) {
        held++;
        maxHeld = Math.max(maxHeld, held);
        const text = Buffer.from(req.image ?? new Uint8Array()).toString();
        const requestId = req.requestId ?? "";
        const delay = Math.max(1, 20 - 2 * (n++ % 8));
        answers.push(
          new Promise<void>((r) => setTimeout(r, delay)).then(() => {
            held--;
            out.push(
              text === "bad"
                ? create(ClassifyStreamResponseSchema, { requestId, outcome: { case: "error", value: { code: 3, message: "not a recognised image format" } } })
                : create(ClassifyStreamResponseSchema, { requestId, outcome: { case: "result", value: create(ClassifyResponseSchema, { sha256: text, requestId }) } }),
            );
          }),
        );
      }
      await Promise.all(answers);
      out.end();
    })();
    return out.iterate();
  };
  return { client: { classifyStream } as unknown as Client<typeof CategorizeService>, maxHeld: () => maxHeld };
}

describe("classify over one stream (cli/classify-stream.ts)", () => {
  let dir: string | undefined;
  const files: string[] = [];

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), "categorize-stream-"));
    for (let i = 0; i < 40; i++) {
      const file = join(dir, `img-${String(i).padStart(2, "0")}.png`);
      await writeFile(file, i === 13 ? "bad" : `image-${i}`);
      files.push(file);
    }
  });
  after(async () => {
    if (dir !== undefined) await rm(dir, { recursive: true, force: true });
  });

  for (const concurrency of [1, 3, 8]) {
    it(`never holds more than --concurrency ${concurrency} images in flight and pairs every out-of-order answer with its own file`, async () => {
      const edge = fakeEdge();
      const outcomes: FileOutcome[] = [];
      const summary = await classifyFiles({ client: edge.client, files, topK: 5, concurrency, onOutcome: (o) => outcomes.push(o) });
      assert.deepEqual(summary, { streamError: undefined, unsent: [] });
      assert.ok(edge.maxHeld() <= concurrency, `held ${edge.maxHeld()} > ${concurrency}`);
      assert.equal(edge.maxHeld(), concurrency, "and keeps the window full");
      assert.deepEqual(outcomes.map((o) => o.path).sort(), files);
      for (const o of outcomes) {
        const i = Number(/img-(\d+)/.exec(o.path)![1]);
        if (i === 13) assert.deepEqual(o, { path: o.path, ok: false, message: "[invalid_argument] not a recognised image format" });
        else assert.equal(o.ok && o.result.sha256, `image-${i}`);
      }
      if (concurrency > 1) assert.notDeepEqual(outcomes.map((o) => o.path), files, "answers arrived out of order");
    });
  }

  it("fails a file it cannot read on its own and sends the rest", async () => {
    const edge = fakeEdge();
    const outcomes: FileOutcome[] = [];
    const missing = join(dir!, "gone.png");
    await classifyFiles({ client: edge.client, files: [files[0]!, missing, files[1]!], topK: 5, concurrency: 2, onOutcome: (o) => outcomes.push(o) });
    assert.deepEqual(outcomes.filter((o) => o.ok).map((o) => o.path).sort(), [files[0], files[1]]);
    const failed = outcomes.find((o) => !o.ok);
    assert.equal(failed?.path, missing);
    assert.match(failed.message, /ENOENT/);
  });
});
