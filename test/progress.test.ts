/** The CLI progress bar: drawn only on a TTY, with rows/s and an ETA. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressBar } from '../workers/src/cli/progress.js';

function stream(isTTY: boolean): { s: NodeJS.WriteStream; text: () => string } {
  let out = '';
  const w = new Writable({
    write(chunk: Buffer, _e, cb) {
      out += chunk.toString();
      cb();
    },
  }) as unknown as NodeJS.WriteStream;
  Object.defineProperty(w, 'isTTY', { value: isTTY });
  return { s: w, text: () => out };
}

describe('ProgressBar', () => {
  it('draws percent, rows, rows/s and ETA on a TTY, ends with a newline, and counts a resumed run\'s old rows out of the rate', async () => {
    const { s, text } = stream(true);
    const bar = new ProgressBar(s);
    await new Promise((r) => setTimeout(r, 50)); // some elapsed time, so the rate is finite (not a synchronisation)
    bar.update(600, 1000, 500);
    const line = text();
    expect(line).toMatch(/^\r█+░+ {2}60% {2}600\/1,000 rows {2}[\d,]+ rows\/s {2}ETA \d+\.\d s $/);
    const rate = Number(/ ([\d,]+) rows\/s/.exec(line)![1]!.replace(/,/g, ''));
    expect(rate).toBeLessThan(100 / 0.05 + 1); // 100 new rows in ≥ 50 ms, not 600
    bar.update(1000, 1000);
    bar.done();
    expect(text()).toMatch(/100% {2}1,000\/1,000 rows .*\n$/);
  });

  it('writes nothing when the stream is not a TTY (logs and CI stay clean)', () => {
    const { s, text } = stream(false);
    const bar = new ProgressBar(s);
    bar.update(5, 10);
    bar.done();
    expect(text()).toBe('');
  });
});
