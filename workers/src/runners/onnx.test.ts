import { describe, expect, it } from 'vitest';
import { ConfigError, ModelLoadError } from '@inferq/shared';
import type * as ort from 'onnxruntime-node';
import { buildMlp } from '../../../examples/build/onnx-builder.js';
import { captureLogger, smallMlp } from '../../../test/helpers/models.js';
import { parseDevice } from './device.js';
import { OnnxRunner } from './onnx.js';
import { inThreadSessionFactory } from './ort-session.js';
import type { OrtSessionFactory } from './ort-session.js';
import { workerSessionFactory } from './ort-worker.js';

const model = buildMlp(smallMlp([4, 8, 1]));

function runner(device: string, createSession?: OrtSessionFactory, threads?: number) {
  const cap = captureLogger();
  const r = new OnnxRunner({
    model,
    source: 'test.onnx',
    name: 'm',
    version: '1',
    device: parseDevice(device),
    logger: cap.logger,
    ...(threads === undefined ? {} : { intraOpThreads: threads }),
    ...(createSession === undefined ? {} : { createSession }),
  });
  return { r, lines: cap.lines };
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
