/** A one-line progress bar on a TTY (stderr); nothing when not a TTY. */
export class ProgressBar {
  private readonly stream: NodeJS.WriteStream;
  private readonly now: () => number;
  private readonly started: number;
  private lastDraw = -Infinity;
  private drawn = false;

  /** `now`: a clock in milliseconds (tests drive it by hand). */
  constructor(stream: NodeJS.WriteStream = process.stderr, now: () => number = () => performance.now()) {
    this.stream = stream;
    this.now = now;
    this.started = now();
  }

  /** `startRows`: rows already done before this process started (a resumed run): not counted in the rate. */
  update(rows: number, total: number, startRows = 0): void {
    if (!this.stream.isTTY) return;
    const now = this.now();
    if (now - this.lastDraw < 100 && rows < total) return;
    this.lastDraw = now;
    const seconds = (now - this.started) / 1000;
    const rate = seconds > 0 ? (rows - startRows) / seconds : 0;
    const frac = total > 0 ? Math.min(1, rows / total) : 0;
    const width = 28;
    const filled = Math.round(frac * width);
    const eta = rate > 0 ? (total - rows) / rate : 0;
    const bar = `${'█'.repeat(filled)}${'░'.repeat(width - filled)}`;
    this.stream.write(`\r${bar} ${(frac * 100).toFixed(0).padStart(3)}%  ${fmt(rows)}/${fmt(total)} rows  ${fmt(rate)} rows/s  ETA ${eta.toFixed(1)} s `);
    this.drawn = true;
  }

  done(): void {
    if (this.drawn) this.stream.write('\n');
  }
}

export function fmt(n: number): string {
  return Math.round(n).toLocaleString('en-US');
}
