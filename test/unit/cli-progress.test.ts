import assert from "node:assert/strict";
import { Writable } from "node:stream";
import { describe, it } from "node:test";
import { createProgress } from "../../cli/progress.js";

/** A stand-in for a terminal's stderr that keeps what was drawn. */
function fakeTerminal(isTTY: boolean): { stream: NodeJS.WriteStream; text: () => string } {
  let text = "";
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      text += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.assign(stream, { isTTY, columns: 100 });
  return { stream, text: () => text };
}

describe("classify progress bar", () => {
  it("draws the count, failures, a rate and an ETA on a terminal and clears its line when done", () => {
    const term = fakeTerminal(true);
    const progress = createProgress("classify", 4, term.stream);
    progress.tick(false);
    progress.tick(true);
    progress.line("stderr", "broken.jpg: [invalid_argument] not an image");
    progress.finish();
    const out = term.text();
    assert.match(out, /classify \[#+\.+\] 2\/4 \(1 failed\) {2}[\d.]+\/s {2}ETA (\d+:\d\d|--:--)/);
    // The error line starts on a cleared line, not in the middle of the bar.
    assert.match(out, /\r\x1b\[2Kbroken\.jpg: \[invalid_argument\] not an image\n/);
    assert.ok(out.endsWith("\r\x1b[2K"), "the bar is removed at the end");
  });

  it("writes only the lines it is given when stderr is not a terminal", () => {
    const term = fakeTerminal(false);
    const progress = createProgress("classify", 2, term.stream);
    progress.tick(true);
    progress.line("stderr", "a.png: failed");
    progress.tick(false);
    progress.finish();
    assert.equal(term.text(), "a.png: failed\n");
  });
});
