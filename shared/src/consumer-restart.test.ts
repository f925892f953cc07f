import { describe, expect, it } from 'vitest';
import { ConsumerRestarter } from './consumer-restart.js';

/** A restarter on a hand-driven clock: `timers` holds what it scheduled, `fire()` runs the next one. */
function harness(over: { maxRestarts?: number; runFails?: () => boolean } = {}) {
  const timers: { f: () => void; ms: number }[] = [];
  const events: string[] = [];
  let runs = 0;
  let stopped = false;
  const r = new ConsumerRestarter({
    run: async () => {
      runs++;
      if (over.runFails?.() === true) throw new Error(`run ${runs} failed`);
    },
    stopped: () => stopped,
    ...(over.maxRestarts === undefined ? {} : { maxRestarts: over.maxRestarts }),
    onRestart: (err, attempt, delayMs) => events.push(`restart ${attempt} in ${delayMs} ms: ${err.message}`),
    onGiveUp: (err) => events.push(`give up: ${err.message}`),
    setTimer: (f, ms) => void timers.push({ f, ms }),
  });
  const fire = async (): Promise<void> => {
    timers.shift()!.f();
    await new Promise((res) => setImmediate(res)); // let a failed run report back
  };
  return { r, timers, events, fire, runs: () => runs, stop: () => (stopped = true) };
}

describe('ConsumerRestarter', () => {
  it('leaves retriable crashes to kafkajs, restarts the others with doubling backoff capped at 30 s', async () => {
    const h = harness({ maxRestarts: 10 });
    h.r.crashed(new Error('retriable'), true);
    expect(h.timers).toHaveLength(0);
    for (let i = 0; i < 8; i++) {
      h.r.crashed(new Error('Failed to find group coordinator'), false);
      await h.fire();
    }
    expect(h.runs()).toBe(8);
    expect(h.events.map((e) => Number(/in (\d+) ms/.exec(e)![1]))).toEqual([500, 1000, 2000, 4000, 8000, 16000, 30000, 30000]);
    expect(h.r.restarts).toBe(8);
  });

  it('a rejoin resets the backoff; more than maxRestarts crashes in a row give up once', async () => {
    const h = harness({ maxRestarts: 3 });
    h.r.crashed(new Error('a'), false);
    h.r.crashed(new Error('b'), false);
    h.r.joined();
    h.r.crashed(new Error('c'), false);
    expect(h.timers.map((t) => t.ms)).toEqual([500, 1000, 500]);
    h.r.crashed(new Error('d'), false);
    h.r.crashed(new Error('e'), false);
    h.r.crashed(new Error('f'), false);
    expect(h.events.at(-1)).toBe('give up: f');
    await expect(h.r.failed).rejects.toThrow('f');
    h.r.crashed(new Error('g'), false);
    expect(h.events.filter((e) => e.startsWith('give up'))).toHaveLength(1);
  });

  it('a run that fails by itself counts as the next crash', async () => {
    const h = harness({ maxRestarts: 2, runFails: () => true });
    h.r.crashed(new Error('first'), false);
    await h.fire();
    expect(h.events).toEqual(['restart 1 in 500 ms: first', 'restart 2 in 1000 ms: run 1 failed']);
    await h.fire();
    expect(h.events.at(-1)).toBe('give up: run 2 failed');
  });

  it('does nothing once its owner is stopping, even for a restart already scheduled', async () => {
    const h = harness();
    h.r.crashed(new Error('x'), false);
    h.stop();
    await h.fire();
    expect(h.runs()).toBe(0);
    h.r.crashed(new Error('y'), false);
    expect(h.timers).toHaveLength(0);
  });
});
