/** A progress line on a terminal; on anything else only the lines written through it. */
export interface Progress {
  /** One more file done. */
  tick(failed: boolean): void;
  /** Writes a whole line to stdout or stderr without tearing the bar. */
  line(to: "stdout" | "stderr", text: string): void;
  /** Removes the bar; later output goes straight through. */
  finish(): void;
}

/**
 * A bar with a count, a rate and an ETA on stderr, drawn only when stderr is a
 * terminal: redirected or piped output must stay free of control characters.
 */
export function createProgress(label: string, total: number, stderr: NodeJS.WriteStream = process.stderr): Progress {
  if (!stderr.isTTY) {
    return {
      tick: () => {},
      line: (to, text) => void (to === "stdout" ? process.stdout : stderr).write(`${text}\n`),
      finish: () => {},
    };
  }
  const started = performance.now();
  let done = 0;
  let failed = 0;
  let drawn = false;
  let lastDraw = 0;
  const clear = () => {
    if (drawn) stderr.write("\r\x1b[2K");
    drawn = false;
  };
  const draw = () => {
    lastDraw = performance.now();
    const elapsed = (lastDraw - started) / 1000;
    const rate = elapsed > 0 ? done / elapsed : 0;
    const eta = rate > 0 ? (total - done) / rate : undefined;
    const tail = ` ${done}/${total}${failed > 0 ? ` (${failed} failed)` : ""}  ${rate.toFixed(1)}/s  ETA ${eta === undefined ? "--:--" : clock(eta)}`;
    const width = Math.max(10, Math.min(40, (stderr.columns || 80) - label.length - tail.length - 4));
    const filled = total === 0 ? width : Math.round((done / total) * width);
    stderr.write(`\r\x1b[2K${label} [${"#".repeat(filled)}${".".repeat(width - filled)}]${tail}`);
    drawn = true;
  };
  // The ETA keeps moving while one slow image holds every answer back.
  const timer = setInterval(draw, 500);
  timer.unref();
  draw();
  return {
    tick(isFailure) {
      done++;
      if (isFailure) failed++;
      // Redrawing per answer would cost more than the answers on a fast node.
      if (performance.now() - lastDraw >= 100 || done === total) draw();
    },
    line(to, text) {
      // Output redirected to a file does not share the terminal line with the bar.
      if (to === "stdout" && !process.stdout.isTTY) return void process.stdout.write(`${text}\n`);
      clear();
      (to === "stdout" ? process.stdout : stderr).write(`${text}\n`);
      draw();
    },
    finish() {
      clearInterval(timer);
      clear();
    },
  };
}

/** Seconds as m:ss, or h:mm:ss past an hour. */
function clock(seconds: number): string {
  const s = Math.round(seconds);
  const hh = Math.floor(s / 3600);
  const mm = Math.floor((s % 3600) / 60);
  const ss = String(s % 60).padStart(2, "0");
  return hh > 0 ? `${hh}:${String(mm).padStart(2, "0")}:${ss}` : `${mm}:${ss}`;
}
