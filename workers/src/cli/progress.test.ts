/** The CLI progress bar: drawn only on a TTY, with rows/s and an ETA. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ProgressBar } from './progress.js';

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
  it('draws percent, rows, rows/s and ETA on a TTY, ends with a newline, and counts a resumed run\'s old rows out of the rate', () => {
    const { s, text } = stream(true);
    let clock = 1_000;
    const bar = new ProgressBar(s, () => clock);
    clock += 50;
    bar.update(600, 1000, 500);
    // 100 new rows in 50 ms = 2,000 rows/s (not 600 rows' 12,000); 400 left at that rate = 0.2 s
    expect(text()).toBe(`\r${'█'.repeat(17)}${'░'.repeat(11)}  60%  600/1,000 rows  2,000 rows/s  ETA 0.2 s `);
    clock += 10;
    bar.update(700, 1000, 500); // within 100 ms of the last draw: not redrawn
    expect(text().split('\r')).toHaveLength(2);
    clock += 10;
    bar.update(1000, 1000); // the last update is always drawn
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
