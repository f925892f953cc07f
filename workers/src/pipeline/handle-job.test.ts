/**
 * The pipeline's rules, through the in-memory source (no servers): what is retried, what is
 * dead-lettered with which code, what is handed back, and what a run that answered before does.
 */
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { ClosedError, InferqError, encodeEnvelope } from '@inferq/shared';
import type { EnvelopeMeta, TensorMap } from '@inferq/shared';
import { forwardMlp } from '../../../examples/build/onnx-builder.js';
import { smallMlp, tempDir, writeModel } from '../../../test/helpers/models.js';
import { silentLogger } from '../logging.js';
import { ModelPool } from '../models/model-pool.js';
import { ModelRepository } from '../models/repository.js';
import { ParquetSink } from '../sinks/parquet-sink.js';
import { SinkSet } from '../sinks/sink-set.js';
import { MemorySource } from '../sources/memory/source.js';
import { JobPipeline } from './handle-job.js';

const spec = smallMlp([4, 8, 2], 5);
let pool: ModelPool;

beforeAll(async () => {
  const repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', spec);
  pool = new ModelPool(new ModelRepository(repo), { logger: silentLogger(), batching: { maxDelayMs: 0 } });
  return () => pool.close();
});

const f32 = (rows: number, fill = (i: number) => Math.sin(i)): TensorMap => ({ features: { dtype: 'float32', shape: [rows, 4], data: Float32Array.from({ length: rows * 4 }, (_, i) => fill(i)) } });

function message(meta: Partial<EnvelopeMeta> & { id: string }, tensors: TensorMap = f32(2), attempts = 3): { id: string; bytes: Uint8Array; attempts: number } {
  return { id: meta.id, bytes: encodeEnvelope({ model: 'mlp', replyTo: 'replies', ...meta }, tensors), attempts };
}

/** A pipeline over a memory source; `models` may wrap the pool to fail on purpose. */
async function setup(models: Pick<ModelPool, 'get'> = pool): Promise<{ source: MemorySource; pipeline: JobPipeline }> {
  const source = new MemorySource();
  const sinks = new SinkSet({ defaults: [], open: (uri) => new ParquetSink({ location: uri, logger: silentLogger() }) });
  const pipeline = new JobPipeline({ models, sinks, rolls: undefined, replies: source.replies, nonFinite: 'reject', logger: silentLogger() });
  await source.start(pipeline.handle);
  return { source, pipeline };
}

describe('JobPipeline', () => {
  it('a good job is done: one reply equal to the model, no dead letter', async () => {
    const { source } = await setup();
    const x = f32(3);
    const { outcome, attempts } = await source.push(message({ id: 'ok' }, x));
    expect(outcome).toEqual({ kind: 'done', rows: 3 });
    expect(attempts).toBe(1);
    expect(source.deadLetters).toEqual([]);
    expect(source.replies.written).toHaveLength(1);
    const got = source.replies.written[0]!.envelope.tensors['score']!.data;
    const want = forwardMlp(spec, { features: x['features']!.data as Float32Array }, 3);
    want.forEach((v, i) => expect(Math.abs((got[i] as number) - v)).toBeLessThan(1e-5));
  });

  it('bad input is dead-lettered at once with a stable code, an error reply, and no retry', async () => {
    const { source } = await setup();
    const cases: [string, Parameters<typeof message>, string][] = [
      ['NON_FINITE', [{ id: 'nan' }, f32(2, (i) => (i === 5 ? Number.NaN : 1))], 'non-finite value NaN at row 1, column 1'],
      ['BAD_SHAPE', [{ id: 'wide' }, { features: { dtype: 'float32', shape: [1, 5], data: new Float32Array(5) } }], 'expected float32 [n,4], got float32 [1,5]'],
      ['BAD_DTYPE', [{ id: 'f64' }, { features: { dtype: 'float64', shape: [1, 4], data: new Float64Array(4) } }], 'float64'],
      ['MISSING_INPUT', [{ id: 'missing' }, { other: { dtype: 'float32', shape: [1, 4], data: new Float32Array(4) } }], 'missing input "features"'],
      ['UNKNOWN_MODEL', [{ id: 'nope', model: 'nope' }], 'unknown model "nope"'],
      ['UNKNOWN_VERSION', [{ id: 'v9', version: '9' }], 'version "9" does not exist'],
      ['DEADLINE', [{ id: 'late', deadline: Date.now() - 1000 }], 'deadline passed'],
      ['SINK_NOT_ALLOWED', [{ id: 'sink', sinks: ['/tmp/elsewhere'] }], 'this worker takes no job sinks'],
    ];
    for (const [code, args, reason] of cases) {
      const { outcome, attempts } = await source.push(message(...args));
      expect(outcome.kind, code).toBe('failed');
      expect(attempts, code).toBe(1);
      const letter = source.deadLetters.find((l) => l.id === args[0].id)!;
      expect(letter, code).toMatchObject({ code, retriable: false, reply: true, replyTo: 'replies', attempts: 1 });
      expect(letter.reason).toContain(reason);
    }
    expect(source.replies.written).toHaveLength(0);
    // A message whose id is not the source's is refused too.
    const forged = { id: 'queue-id', bytes: encodeEnvelope({ id: 'other-id', model: 'mlp' }, f32(1)) };
    expect((await source.push(forged)).outcome.kind).toBe('failed');
    expect(source.deadLetters.at(-1)).toMatchObject({ id: 'queue-id', code: 'ID_MISMATCH' });
  });

  it('a retriable failure is retried with backoff until it works, or dead-lettered after the last attempt', async () => {
    let failures = 2;
    const flaky = {
      get: (name: string, version?: string) => (failures-- > 0 ? Promise.reject(new InferqError('model store unreachable', { retriable: true, code: 'UNAVAILABLE' })) : pool.get(name, version)),
    };
    const { source, pipeline } = await setup(flaky);
    const { outcome, attempts } = await source.push(message({ id: 'flaky' }));
    expect(outcome.kind).toBe('done');
    expect(attempts).toBe(3);
    expect(pipeline.stats.retried).toBe(2);
    failures = 100;
    const gaveUp = await source.push(message({ id: 'down' }, f32(1), 4));
    expect(gaveUp.outcome.kind).toBe('failed');
    expect(gaveUp.attempts).toBe(4);
    expect(source.deadLetters.at(-1)).toMatchObject({ id: 'down', code: 'UNAVAILABLE', retriable: true, attempts: 4 });
  });

  it('a job the worker cannot finish because it is stopping is handed back: neither retried nor dead-lettered', async () => {
    const closing = { get: () => Promise.reject(new ClosedError('batcher closed')) };
    const { source, pipeline } = await setup(closing);
    const { outcome, attempts } = await source.push(message({ id: 'closing' }));
    expect(outcome.kind).toBe('handBack');
    expect(attempts).toBe(1);
    expect(source.deadLetters).toEqual([]);
    expect(pipeline.stats.handedBack).toBe(1);
  });

  it('a run whose reply went out before a crash is not failed for its deadline and does not reply again', async () => {
    const { source } = await setup();
    const deadline = Date.now() + 60_000;
    await source.push(message({ id: 'once', deadline }), 'once:run-1');
    expect(source.replies.written).toHaveLength(1);
    // The same run delivered again after its deadline (a crash before the acknowledgement).
    const again = await source.push(message({ id: 'once', deadline: Date.now() - 1 }), 'once:run-1');
    expect(again.outcome.kind).toBe('done');
    expect(source.replies.written).toHaveLength(1);
    expect(source.deadLetters).toEqual([]);
  });

  it('a pack with one bad job: the bad one is dead-lettered alone, the good ones answered in one entry', async () => {
    const { source, pipeline } = await setup();
    const x = f32(4, (i) => (i === 9 ? Number.NaN : i / 10)); // row 2 (job "b") holds the NaN
    const jobs = [
      { id: 'a', rows: 2 },
      { id: 'b', rows: 1 },
      { id: 'c', rows: 1 },
    ];
    const { outcome } = await source.push({ id: 'pack', bytes: encodeEnvelope({ id: 'pack', model: 'mlp', replyTo: 'replies', jobs }, x) });
    expect(outcome).toEqual({ kind: 'done', rows: 3 });
    expect(pipeline.stats.packsSplit).toBe(1);
    expect(source.deadLetters.map((l) => [l.id, l.code, l.reply])).toEqual([['b', 'NON_FINITE', true]]);
    expect(source.replies.written).toHaveLength(1);
    const reply = source.replies.written[0]!.envelope;
    expect(reply.jobs?.map((j) => [j.id, j.rows])).toEqual([
      ['a', 2],
      ['c', 1],
    ]);
    const data = x['features']!.data as Float32Array;
    const want = [...forwardMlp(spec, { features: data.subarray(0, 8) }, 2), ...forwardMlp(spec, { features: data.subarray(12, 16) }, 1)];
    Array.from(reply.tensors['score']!.data as Float32Array).forEach((v, i) => expect(Math.abs(v - want[i]!)).toBeLessThan(1e-5));
  });
});
