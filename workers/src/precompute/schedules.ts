/**
 * Scheduled precompute runs on BullMQ job schedulers (queue "inferq-schedules"):
 *
 *   inferq schedule add NAME --cron "0 3 * * *" --spec spec.yaml   → upsertJobScheduler(NAME, { pattern }, job)
 *   inferq schedule list / remove NAME
 *   inferq worker --role precompute                                 → runs the jobs the schedulers emit
 *
 * A job names its spec by path (read when it runs: edits take effect at the next run) and
 * the model repository. The table lock in precompute() keeps it to one run per table at a
 * time; a run that finds the lock held is skipped (not retried), the next tick runs again.
 */
import { resolve } from 'node:path';
import { Queue, Worker } from 'bullmq';
import type { Job } from 'bullmq';
import { Redis } from 'ioredis';
import { ConfigError, DEFAULT_PREFIX, InferqError } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { loadModel } from '../models/loaded-model.js';
import type { LoadModelOptions } from '../models/loaded-model.js';
import { ModelRepository } from '../models/repository.js';
import { precompute } from './precompute.js';
import type { PrecomputeSummary, PrecomputeTarget } from './precompute.js';
import { loadSpec } from './spec.js';

export const SCHEDULE_QUEUE = 'inferq-schedules';

export interface ScheduleJob {
  readonly v: 1;
  readonly spec: string;
  readonly to: PrecomputeTarget;
  readonly modelRepo: string;
}

export interface ScheduleInfo {
  readonly name: string;
  readonly cron: string | undefined;
  readonly next: number | undefined;
  readonly spec: string | undefined;
}

function queue(redisUrl: string): { q: Queue; close(): Promise<void> } {
  const connection = new Redis(redisUrl, { maxRetriesPerRequest: null });
  const q = new Queue(SCHEDULE_QUEUE, { connection, prefix: DEFAULT_PREFIX });
  return {
    q,
    close: async () => {
      await q.close();
      await connection.quit();
    },
  };
}

/** Adds or replaces a schedule; the spec is validated now, so a bad one fails here, not at 3 a.m. */
export async function addSchedule(redisUrl: string, name: string, cron: string, job: Omit<ScheduleJob, 'v'>): Promise<void> {
  if (!/^[A-Za-z0-9_.:-]+$/.test(name)) throw new ConfigError(`schedule name "${name}": use letters, digits, _ . : and -`);
  const spec = resolve(job.spec);
  await loadSpec(spec);
  const { q, close } = queue(redisUrl);
  try {
    await q.upsertJobScheduler(name, { pattern: cron }, { name: 'precompute', data: { v: 1, ...job, spec, modelRepo: job.modelRepo } satisfies ScheduleJob, opts: { attempts: 1, removeOnComplete: 100, removeOnFail: 100 } });
  } catch (err) {
    throw new ConfigError(`schedule "${name}": ${(err as Error).message} (cron "${cron}")`);
  } finally {
    await close();
  }
}

export async function listSchedules(redisUrl: string): Promise<ScheduleInfo[]> {
  const { q, close } = queue(redisUrl);
  try {
    return (await q.getJobSchedulers(0, -1, true)).map((s) => ({
      name: s.key,
      cron: s.pattern,
      next: s.next,
      spec: (s.template?.data as Partial<ScheduleJob> | undefined)?.spec,
    }));
  } finally {
    await close();
  }
}

export async function removeSchedule(redisUrl: string, name: string): Promise<boolean> {
  const { q, close } = queue(redisUrl);
  try {
    return await q.removeJobScheduler(name);
  } finally {
    await close();
  }
}

export interface PrecomputeWorkerOptions {
  readonly redis: string;
  readonly logger: Logger;
  readonly model: Omit<LoadModelOptions, 'logger'>;
  readonly onRun?: (summary: PrecomputeSummary) => void;
}

/** The worker role that runs scheduled precompute jobs, one at a time. */
export class PrecomputeWorker {
  private readonly connection: Redis;
  private worker: Worker | undefined;

  constructor(private readonly opts: PrecomputeWorkerOptions) {
    this.connection = new Redis(opts.redis, { maxRetriesPerRequest: null });
  }

  async start(): Promise<void> {
    this.worker = new Worker(SCHEDULE_QUEUE, (job: Job) => this.run(job), { connection: this.connection, prefix: DEFAULT_PREFIX, concurrency: 1, autorun: false });
    this.worker.on('error', (err) => this.opts.logger.error({ err }, 'schedule worker error'));
    void this.worker.run().catch((err: unknown) => this.opts.logger.error({ err }, 'schedule worker stopped'));
    await this.worker.waitUntilReady();
  }

  private async run(job: Job): Promise<{ runId: string; rows: number } | { skipped: string }> {
    const data = job.data as ScheduleJob;
    const log = this.opts.logger.child({ schedule: job.repeatJobKey ?? job.name, spec: data.spec });
    const spec = await loadSpec(data.spec);
    const model = await loadModel(new ModelRepository(data.modelRepo), spec.spec.model, spec.spec.version, { ...this.opts.model, logger: log });
    try {
      const summary = await precompute({ spec, model, to: data.to, redis: this.opts.redis, logger: log });
      log.info({ runId: summary.runId, rows: summary.rows, seconds: summary.seconds }, 'scheduled precompute run complete');
      this.opts.onRun?.(summary);
      return { runId: summary.runId, rows: summary.rows };
    } catch (err) {
      if (err instanceof InferqError && /already in progress/.test(err.message)) {
        log.warn({ reason: err.message }, 'scheduled run skipped');
        return { skipped: err.message };
      }
      throw err;
    } finally {
      await model.close();
    }
  }

  async close(timeoutMs = 30_000): Promise<void> {
    if (this.worker !== undefined) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([this.worker.close(), new Promise<void>((r) => (timer = setTimeout(r, timeoutMs)))]);
      clearTimeout(timer);
    }
    await this.connection.quit().catch(() => this.connection.disconnect());
  }
}
