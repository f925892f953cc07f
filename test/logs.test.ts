/**
 * What a worker writes on stderr: one JSON object per line, no key twice in any object,
 * the same base fields on every line, and levels used consistently (warn for a job's
 * failure, info for the life of the process, debug for detail).
 */
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Producer, RemoteJobError } from '@inferq/producer';
import { redisServer } from './infra/servers.js';
import { strictJsonLines } from './helpers/json-lines.js';
import { smallMlp, tempDir, writeModel } from './helpers/models.js';
import { dropQueue, queueName, startWorker } from './helpers/redis.js';

const url = await redisServer();
const queue = queueName('logs');
let repo: string;

const LEVEL = { debug: 20, info: 30, warn: 40, error: 50 } as const;

beforeAll(async () => {
  repo = join(await tempDir(), 'models');
  await writeModel(repo, 'mlp', '1', smallMlp([4, 8, 1], 3));
});

afterAll(() => dropQueue(url, queue));

describe('worker logs', () => {
  it('are strict JSON lines with one set of base fields, warn for failed jobs and info for start and stop', async () => {
    const sinkDir = join(await tempDir(), 'sink');
    process.env['INFERQ_TEST_WORKER_LOG_LEVEL'] = 'debug';
    const w = startWorker(['--queue', queue, '--redis', url, '--model-repo', repo, '--models', 'mlp', '--threads', '1', '--sink', `parquet:${sinkDir}`, '--sink-roll-ms', '200']);
    delete process.env['INFERQ_TEST_WORKER_LOG_LEVEL'];
    await w.ready;
    const producer = new Producer({ redis: url, queue });
    try {
      for (let i = 0; i < 5; i++) await producer.predict('mlp', [[i, 1, 2, 3]], { timeoutMs: 20_000 });
      const bad = await producer.predict('mlp', [[1, Number.NaN, 0, 0]], { timeoutMs: 20_000 }).catch((e: unknown) => e);
      expect(bad).toBeInstanceOf(RemoteJobError);
      expect((bad as RemoteJobError).code).toBe('NON_FINITE');
    } finally {
      await producer.close();
    }
    w.child.kill('SIGTERM');
    expect((await w.exited).code).toBe(0);

    const stderr = w.output().split('\n').filter((l) => !l.startsWith('inferq worker: serving')).join('\n');
    const lines = strictJsonLines(stderr);
    expect(lines.length).toBeGreaterThan(3);
    for (const l of lines) {
      expect(l, JSON.stringify(l)).toMatchObject({ cmd: 'worker', device: 'cpu', pid: w.child.pid });
      expect(typeof l['msg'], JSON.stringify(l)).toBe('string');
      expect(typeof l['time'], JSON.stringify(l)).toBe('string');
      expect(Object.values(LEVEL), JSON.stringify(l)).toContain(l['level']);
    }
    const byMsg = (msg: string): Record<string, unknown>[] => lines.filter((l) => l['msg'] === msg);
    const dead = byMsg('job dead-lettered');
    expect(dead).toHaveLength(1);
    expect(dead[0]).toMatchObject({ level: LEVEL.warn, code: 'NON_FINITE', transport: 'redis' });
    expect(byMsg('stopped')).toEqual([expect.objectContaining({ level: LEVEL.info })]);
    expect(byMsg('model loaded')).toEqual([expect.objectContaining({ level: LEVEL.info, model: 'mlp', version: '1' })]);
    expect(byMsg('redis source started')).toEqual([expect.objectContaining({ level: LEVEL.info, transport: 'redis' })]);
    // Nothing went wrong in the process itself: no error-level line.
    expect(lines.filter((l) => (l['level'] as number) >= LEVEL.error)).toEqual([]);
  });
});
