/** Readiness transitions: starting (models, source) → ready ⇄ source unreachable → draining for good. */
import { describe, expect, it } from 'vitest';
import { Health } from './health.js';

describe('Health', () => {
  it('is ready only once the required models are warm and the source started and connected; draining is final', () => {
    const h = new Health(['a', 'b']);
    expect(h.readiness()).toEqual({ ready: false, reason: 'starting: loading and warming a, b' });
    let connected = true;
    h.serving(() => (connected ? { connected: true } : { connected: false, reason: 'redis 127.0.0.1:1 is reconnecting' }));
    // The source alone does not make it ready while models are still loading.
    expect(h.readiness().ready).toBe(false);
    expect(h.readiness().reason).toMatch(/^starting/);
    h.modelsReady();
    expect(h.readiness()).toEqual({ ready: true, reason: 'ready' });
    connected = false;
    expect(h.readiness()).toEqual({ ready: false, reason: 'source unreachable: redis 127.0.0.1:1 is reconnecting' });
    connected = true;
    expect(h.readiness().ready).toBe(true);
    h.draining();
    expect(h.readiness()).toEqual({ ready: false, reason: 'draining' });
    h.serving(() => ({ connected: true }));
    expect(h.readiness()).toEqual({ ready: false, reason: 'draining' });
  });

  it('without required models, waits only for the source to start', () => {
    const h = new Health();
    expect(h.readiness()).toEqual({ ready: false, reason: 'starting: connecting to the source' });
    h.serving();
    expect(h.readiness().ready).toBe(true);
  });

  it('draining before the source started stays draining', () => {
    const h = new Health();
    h.draining();
    h.serving(() => ({ connected: true }));
    expect(h.readiness()).toEqual({ ready: false, reason: 'draining' });
  });
});
