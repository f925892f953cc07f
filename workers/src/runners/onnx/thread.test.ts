/** The model thread (thread.ts) as it runs from sources, here under vitest (the build's thread: test/model-thread-build.test.ts). */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { InferenceError, ModelLoadError } from '@inferq/shared';
import { buildMlp, forwardMlp } from '../../../../examples/build/onnx-builder.js';
import { smallMlp } from '../../../../test/helpers/models.js';
import type { OrtSession } from './session.js';
import { threadEntry, workerSessionFactory } from './worker-session.js';

const spec = smallMlp([4, 16, 3], 7);
const model = buildMlp(spec);

/** `rows` rows of 4 features, different in every row. */
function features(rows: number): Float32Array {
  return Float32Array.from({ length: rows * 4 }, (_, i) => Math.sin(i * 0.37) * 3);
}

/** Runs `x` on `session` and checks the scores against the pure-JS forward pass. */
async function expectScores(session: OrtSession, x: Float32Array): Promise<void> {
  const rows = x.length / 4;
  const out = await session.run({ features: new ort.Tensor('float32', x, [rows, 4]) });
  expect(out['score']!.dims).toEqual([rows, 3]);
  expectClose(out['score']!.data as Float32Array, forwardMlp(spec, { features: x }, rows));
}

function expectClose(got: ArrayLike<number>, want: Float32Array): void {
  expect(got).toHaveLength(want.length);
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  expect(worst).toBeLessThan(1e-5);
}

describe('the model thread from sources', () => {
  it('starts through workers/dev/thread-from-source.mjs (only thread.ts exists here) and gives the forward pass, run after run', async () => {
    expect(existsSync(fileURLToPath(new URL('./thread.js', import.meta.url)))).toBe(false);
    expect(threadEntry().href).toBe(new URL('../../../dev/thread-from-source.mjs', import.meta.url).href);
    const session = await workerSessionFactory(model, { executionProviders: ['cpu'] });
    try {
      expect(session.inputNames).toEqual(['features']);
      expect(session.outputMetadata).toEqual([expect.objectContaining({ name: 'score', isTensor: true, type: 'float32' })]);
      for (const rows of [1, 7, 7, 300]) await expectScores(session, features(rows));
    } finally {
      await session.release();
    }
  });

  it('a run the runtime refuses fails alone with its message; a dtype that cannot cross is refused by name; the session runs on', async () => {
    const session = await workerSessionFactory(model, { executionProviders: ['cpu'] });
    try {
      const wrongWidth = session.run({ features: new ort.Tensor('float32', new Float32Array(10), [2, 5]) });
      await expect(wrongWidth).rejects.toBeInstanceOf(InferenceError);
      await expect(wrongWidth).rejects.toThrow(/invalid dimensions for input: features/);
      const text = session.run({ features: new ort.Tensor('string', ['a', 'b'], [2, 1]) });
      await expect(text).rejects.toThrow('input "features": dtype string cannot be sent to the model thread');
      await expectScores(session, features(5));
    } finally {
      await session.release();
    }
  });

  it('a model the runtime cannot load is a ModelLoadError with the runtime message', async () => {
    const failed = workerSessionFactory(new Uint8Array([1, 2, 3]), { executionProviders: ['cpu'] });
    await expect(failed).rejects.toBeInstanceOf(ModelLoadError);
    await expect(failed).rejects.toThrow('Failed to load model because protobuf parsing failed');
  });
});
