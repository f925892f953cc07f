import { describe, expect, it } from 'vitest';
import { ConfigError, ModelLoadError } from '@inferq/shared';
import type * as ort from 'onnxruntime-node';
import { buildMlp } from '../../../../examples/build/onnx-builder.js';
import { captureLogger, smallMlp } from '../../../../test/helpers/models.js';
import { cpuBudget } from '../budget.js';
import { parseDevice } from '../device.js';
import { OnnxRunner, perCpuInstances, throughputThreads } from './runner.js';
import { inThreadSessionFactory } from './session.js';
import type { OrtSession, OrtSessionFactory } from './session.js';
import { workerSessionFactory } from './worker-session.js';

const model = buildMlp(smallMlp([4, 8, 1]));

function runner(device: string, createSession?: OrtSessionFactory, threads?: number, instances?: number) {
  const cap = captureLogger();
  const r = new OnnxRunner({
    model,
    source: 'test.onnx',
    name: 'm',
    version: '1',
    device: parseDevice(device),
    logger: cap.logger,
    ...(threads === undefined ? {} : { intraOpThreads: threads }),
    ...(instances === undefined ? {} : { instances }),
    ...(createSession === undefined ? {} : { createSession }),
  });
  return { r, lines: cap.lines };
}

/** Loads `r` and an in-thread reference runner of the same model, runs `body`, disposes both. */
async function withReference(r: OnnxRunner, body: (reference: OnnxRunner) => Promise<void>): Promise<void> {
  const reference = runner('cpu', inThreadSessionFactory).r;
  try {
    await Promise.all([r.load(), reference.load()]);
    await body(reference);
  } finally {
    await r.dispose();
    await reference.dispose();
  }
}

/** The scores of 4-feature rows. */
async function scores(r: OnnxRunner, data: Float32Array): Promise<number[]> {
  return Array.from((await r.run({ features: { dtype: 'float32', shape: [data.length / 4, 4], data } }))['score']!.data as Float32Array);
}

describe('device selection', () => {
  it('parses cpu, cuda and cuda:N and names a bad device', () => {
    expect(parseDevice('cpu')).toEqual({ kind: 'cpu' });
    expect(parseDevice('cuda')).toEqual({ kind: 'cuda', id: 0 });
    expect(parseDevice('cuda:3')).toEqual({ kind: 'cuda', id: 3 });
    expect(() => parseDevice('tpu:1')).toThrow(ConfigError);
    expect(() => parseDevice('tpu:1')).toThrow('device "tpu:1": expected "cpu" or "cuda:N"');
  });

  it('passes the CUDA execution provider with the device id, and thread options, to onnxruntime', async () => {
    const seen: ort.InferenceSession.SessionOptions[] = [];
    const recording: OrtSessionFactory = (bytes, options) => {
      seen.push(options);
      return workerSessionFactory(bytes, { ...options, executionProviders: ['cpu'] });
    };
    const { r, lines } = runner('cuda:3', recording, 2);
    await r.load();
    expect(seen).toHaveLength(1);
    expect(seen[0]!.executionProviders).toEqual([{ name: 'cuda', deviceId: 3 }]);
    expect(seen[0]!.intraOpNumThreads).toBe(2);
    expect(seen[0]!.interOpNumThreads).toBe(1);
    expect(seen[0]!.extra).toEqual({ session: { intra_op: { allow_spinning: '0' }, inter_op: { allow_spinning: '0' } } });
    expect(r.device).toEqual({ kind: 'cuda', id: 3 });
    expect(lines.filter((l) => l['level'] === 40)).toHaveLength(0);
    await r.dispose();
  });

  it('falls back to CPU with exactly one warning when the CUDA provider cannot be created', async () => {
    const seen: ort.InferenceSession.SessionOptions[] = [];
    const noCuda: OrtSessionFactory = (bytes, options) => {
      seen.push(options);
      const eps = options.executionProviders ?? [];
      if (eps.some((e) => (typeof e === 'string' ? e : e.name) === 'cuda')) return Promise.reject(new Error('libcudart.so.12: cannot open shared object file'));
      return inThreadSessionFactory(bytes, options);
    };
    const { r, lines } = runner('cuda:1', noCuda);
    await r.load();
    expect(seen.map((o) => o.executionProviders)).toEqual([[{ name: 'cuda', deviceId: 1 }], ['cpu']]);
    expect(r.device).toEqual({ kind: 'cpu' });
    const warnings = lines.filter((l) => l['level'] === 40);
    expect(warnings).toHaveLength(1);
    expect(warnings[0]!['msg']).toMatch(/CUDA unavailable for cuda:1 \(libcudart.so.12: cannot open shared object file\); falling back to CPU/);
    const out = await r.run({ features: { dtype: 'float32', shape: [2, 4], data: new Float32Array(8) } });
    expect(out['score']!.shape).toEqual([2, 1]);
    await r.dispose();
  });

  it('falls back for real on this machine, which has no CUDA provider installed', async () => {
    const { r, lines } = runner('cuda:0');
    await r.load();
    expect(r.device).toEqual({ kind: 'cpu' });
    expect(lines.filter((l) => l['level'] === 40 && /falling back to CPU/.test(String(l['msg'])))).toHaveLength(1);
    await r.dispose();
  });

  it('does not fall back on CPU load errors: a bad model is a ModelLoadError', async () => {
    const cap = captureLogger();
    const r = new OnnxRunner({ model: new Uint8Array([1, 2, 3]), source: 'bad.onnx', name: 'bad', version: '1', logger: cap.logger });
    await expect(r.load()).rejects.toBeInstanceOf(ModelLoadError);
    await expect(r.load()).rejects.toThrow(/model bad:1 \(bad.onnx\) failed to load/);
  });
});

describe('ONNX Runtime in a worker thread: input memory', () => {
  const x = [0.5, -1, 2, 0.25, 1, 1, -0.5, 3];

  it('shares memory from allocate() without a copy here, copies other inputs and leaves them intact; both give the in-thread results', async () => {
    const { r } = runner('cpu');
    await withReference(r, async (reference) => {
      const want = await scores(reference, Float32Array.from(x));

      const own = r.allocate('float32', 8) as Float32Array;
      expect(own.buffer).toBeInstanceOf(SharedArrayBuffer); // nothing is transferred per run
      own.set(x);
      expect(await scores(r, own)).toEqual(want);
      // The same memory came back to the pool with the result: the next allocate() of that size is it.
      expect(r.allocate('float32', 8).buffer).toBe(own.buffer);

      const shared = new Float32Array(16);
      shared.set(x, 4); // a view into a larger buffer (an envelope, a Parquet chunk)
      const view = shared.subarray(4, 12);
      expect(await scores(r, view)).toEqual(want);
      expect(Array.from(view)).toEqual(x); // the caller's memory is untouched

      // The copy went into a pooled shared buffer, which came back too: the next allocate() of
      // that size hands it out again, still holding the rows it carried (fresh memory would be zeros).
      const again = r.allocate('float32', 8);
      expect(again.buffer).not.toBe(own.buffer);
      expect(Array.from(again as Float32Array)).toEqual(x);
    });
  });

  it('many runs in flight, over allocate() memory and views of several sizes, each get their own results; reused buffers carry no stale rows', async () => {
    const { r } = runner('cpu');
    await withReference(r, async (reference) => {
      const inputs = Array.from({ length: 40 }, (_, k) => Float32Array.from({ length: 4 * (1 + (k % 3)) }, (_, i) => Math.sin(k * 31 + i)));
      const wants = await Promise.all(inputs.map((v) => scores(reference, v)));
      // Three rounds: later rounds run on buffers the pool kept (and dropped, past 4 per size) from earlier ones.
      for (let round = 0; round < 3; round++) {
        const got = await Promise.all(
          inputs.map(async (v, k) => {
            let data: Float32Array = v;
            if (k % 2 === 0) {
              data = r.allocate('float32', v.length) as Float32Array;
              data.set(v);
            }
            return scores(r, data);
          }),
        );
        expect(got).toEqual(wants);
      }
    });
  });
});

describe('model instances', () => {
  /** Worker sessions that record the runs each gets and the input buffers it lent. */
  function recorded(): { factory: OrtSessionFactory; sessions: { options: ort.InferenceSession.SessionOptions; runs: ArrayBufferLike[][]; lent: ArrayBufferLike[] }[] } {
    const sessions: { options: ort.InferenceSession.SessionOptions; runs: ArrayBufferLike[][]; lent: ArrayBufferLike[] }[] = [];
    const factory: OrtSessionFactory = async (bytes, options) => {
      const inner = await workerSessionFactory(bytes, { ...options, executionProviders: ['cpu'] });
      const rec = { options, runs: [] as ArrayBufferLike[][], lent: [] as ArrayBufferLike[] };
      sessions.push(rec);
      const session: OrtSession = {
        inputNames: inner.inputNames,
        outputNames: inner.outputNames,
        inputMetadata: inner.inputMetadata,
        outputMetadata: inner.outputMetadata,
        run(feeds) {
          rec.runs.push(Object.values(feeds).map((t) => (t.data as Float32Array).buffer));
          return inner.run(feeds);
        },
        allocate(bytes) {
          const b = inner.allocate!(bytes);
          rec.lent.push(b);
          return b;
        },
        release: () => inner.release(),
      };
      return session;
    };
    return { factory, sessions };
  }

  it('loads N sessions, shares the CPUs out over them, and spreads concurrent runs, each with the in-thread result', async () => {
    const { factory, sessions } = recorded();
    const { r } = runner('cpu', factory, undefined, 2);
    await withReference(r, async (reference) => {
      expect(r.instanceCount).toBe(2);
      expect(sessions.map((s) => s.options.intraOpNumThreads)).toEqual([1, 1].map(() => Math.max(1, Math.floor(cpuBudget() / 2))));
      const inputs = Array.from({ length: 12 }, (_, k) => Float32Array.from({ length: 8 }, (_, i) => Math.cos(k + i)));
      const want = await Promise.all(inputs.map((x) => scores(reference, x)));
      const got = await Promise.all(inputs.map((x) => scores(r, x)));
      expect(got).toEqual(want);
      expect(sessions.map((s) => s.runs.length)).toEqual([6, 6]); // least busy first: they alternate
    });
  });

  it('a batch gathered into allocate() memory runs on the instance that lent it, without a copy', async () => {
    const { factory, sessions } = recorded();
    const { r } = runner('cpu', factory, 1, 2);
    await r.load();
    try {
      const busy = r.run({ features: { dtype: 'float32', shape: [2, 4], data: new Float32Array(8) } }); // instance 0 is busy now
      const own = r.allocate('float32', 8) as Float32Array; // so instance 1 lends this
      own.set([1, 2, 3, 4, 5, 6, 7, 8]);
      const before = sessions.map((s) => s.runs.length);
      await Promise.all([busy, r.run({ features: { dtype: 'float32', shape: [2, 4], data: own } })]);
      expect(sessions[1]!.lent).toContain(own.buffer);
      expect(sessions[1]!.runs.length - before[1]!).toBe(1);
      expect(sessions[1]!.runs.at(-1)).toEqual([own.buffer]); // the very memory, not a copy
      expect(sessions[0]!.runs.length - before[0]!).toBe(0);
    } finally {
      await r.dispose();
    }
  });

  it('an instance that fails to load releases the ones already loaded and names which one failed', async () => {
    let created = 0;
    let released = 0;
    const secondFails: OrtSessionFactory = async (bytes, options) => {
      if (++created === 3) throw new Error('out of memory');
      const s = await inThreadSessionFactory(bytes, options);
      return { ...s, inputNames: s.inputNames, outputNames: s.outputNames, inputMetadata: s.inputMetadata, outputMetadata: s.outputMetadata, run: (f) => s.run(f), release: () => (released++, s.release()) };
    };
    const { r } = runner('cpu', secondFails, 1, 4);
    await expect(r.load()).rejects.toThrow('model m:1 (test.onnx): instance 3 of 4 failed to load: out of memory');
    expect(released).toBe(2);
    expect(r.instanceCount).toBe(0);
  });

  it('CUDA falls back for every instance with one warning; a bad instance count is refused by name', async () => {
    const eps: unknown[] = [];
    const noCuda: OrtSessionFactory = (bytes, options) => {
      eps.push(options.executionProviders);
      if ((options.executionProviders ?? []).some((e) => (typeof e === 'string' ? e : e.name) === 'cuda')) return Promise.reject(new Error('no CUDA here'));
      return inThreadSessionFactory(bytes, options);
    };
    const { r, lines } = runner('cuda:0', noCuda, 1, 3);
    await r.load();
    expect(eps).toEqual([[{ name: 'cuda', deviceId: 0 }], ['cpu'], ['cpu'], ['cpu']]);
    expect(lines.filter((l) => l['level'] === 40)).toHaveLength(1);
    expect(r.instanceCount).toBe(3);
    await r.dispose();
    await expect(runner('cpu', undefined, undefined, 0).r.load()).rejects.toThrow(ConfigError);
    await expect(runner('cpu', undefined, undefined, 1.5).r.load()).rejects.toThrow('model m:1 (test.onnx): instances must be a positive integer, got 1.5');
  });

  it('perCpuInstances: one single-threaded instance per CPU, fewer (with more threads each) when their copies of the model would not fit in a quarter of memory', () => {
    const GB = 1024 ** 3;
    expect(perCpuInstances(7e6, 24 * GB, 2)).toEqual({ instances: 2, intraOpThreads: 1 });
    expect(perCpuInstances(7e6, 24 * GB, 64)).toEqual({ instances: 64, intraOpThreads: 1 });
    expect(perCpuInstances(2 * GB, 64 * GB, 64)).toEqual({ instances: 2, intraOpThreads: 32 }); // 16 GB for copies of ~6 GB
    expect(perCpuInstances(10 * GB, 16 * GB, 8)).toEqual({ instances: 1, intraOpThreads: 8 });
  });

  it('throughputThreads: one single-threaded instance per CPU unless --instances or --threads say otherwise; one on a GPU', () => {
    expect(throughputThreads({})).toEqual({ instances: 'per-cpu' });
    expect(throughputThreads({ threads: 2 })).toEqual({ intraOpThreads: 2 });
    expect(throughputThreads({ instances: 3 })).toEqual({ instances: 3 });
    expect(throughputThreads({ instances: 2, threads: 4 })).toEqual({ instances: 2, intraOpThreads: 4 });
    expect(throughputThreads({}, { kind: 'cuda', id: 1 })).toEqual({}); // a GPU: one instance
    expect(throughputThreads({ instances: 2 }, { kind: 'cuda', id: 1 })).toEqual({ instances: 2 });
  });
});
