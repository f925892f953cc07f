/**
 * A distributed offline predict: the run's params and keys, and the worker's predict kind.
 *
 * ```
 *  params (record, untrusted): input, output, model name + pinned version, tasks, rows
 *  task payload (job, untrusted): a PredictTask (file, row groups) ─► parsePredictTask
 *  file under --allow-inputs, output under --allow-outputs, model from --model-repo
 *  ─► runPredictTask (part-<i>.parquet via temp + rename; an existing part is kept) ─► SADD done
 *  every task done ─► finishPredictOutput (_SUCCESS) ─► the output's pointer to the run cleared
 * ```
 */
import { createHash } from 'node:crypto';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { ConfigError, DataIOError, InvalidInputError, printable } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import { parseLocation } from '../io/store.js';
import type { Logger } from '../logging.js';
import { loadModel } from '../models/loaded-model.js';
import type { LoadedModel, LoadModelOptions } from '../models/loaded-model.js';
import { MODEL_NAME, ModelRepository } from '../models/repository.js';
import { parsePredictTask } from '../predict/plan.js';
import { finishPredictOutput, partName, runPredictTask } from '../predict/task.js';
import { realKey } from '../precompute/spec.js';
import { canonicalKey } from '../sinks/sink-set.js';
import type { OfflineKindHandler, RunProgress, TaskContext } from './kind.js';
import { runLockValue } from './lock.js';
import { offlineKeys, parseRunParams } from './record.js';
import type { RunRecord } from './record.js';

const location = z.string().min(1).max(4096);

/** A distributed predict's params, as its record holds them (JSON). */
export const predictParamsSchema = z
  .object({
    input: location,
    output: location,
    model: z.object({ name: z.string().regex(MODEL_NAME, 'a model folder name'), version: z.string().regex(/^\d{1,18}$/, 'an integer') }).strict(),
    nonFinite: z.enum(['reject', 'pass']),
    tasks: z.number().int().min(1),
    totalRows: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
  })
  .strict();

export type PredictParams = z.infer<typeof predictParamsSchema>;

export const parsePredictParams = (text: string, runId: string): PredictParams => parseRunParams(predictParamsSchema, text, runId);

/** The keys of an output folder: its lock, and its unfinished run (for a rerun to resume). */
export function outputKeys(prefix: string, output: string): { lock: string; running: string; key: string } {
  let key: string;
  try {
    key = canonicalKey(output);
  } catch (err) {
    throw new ConfigError(`output "${printable(output)}": ${(err as Error).message}`);
  }
  const id = createHash('sha256').update(key).digest('hex').slice(0, 32);
  return { lock: `${prefix}:offline:output:${id}:lock`, running: `${prefix}:offline:output:${id}:running`, key };
}

/** Whether a location lies under one of `folders` (canonical keys; local paths by their real path). */
async function under(uri: string, folders: readonly string[], what: string): Promise<boolean> {
  let key: string;
  try {
    key = await realKey(canonicalKey(uri));
  } catch (err) {
    throw new ConfigError(`${what} "${printable(uri)}": ${(err as Error).message}`);
  }
  return folders.some((k) => key === k || key.startsWith(`${k}/`));
}

export interface PredictTasksOptions {
  /** The worker's --prefix (output locks and pointers live under it). */
  readonly prefix: string;
  /** --allow-inputs: canonical folders the task files must lie under. */
  readonly inputs: readonly string[];
  /** --allow-outputs: canonical folders the output folder must lie under. */
  readonly outputs: readonly string[];
  readonly modelRepo: string;
  readonly model: Omit<LoadModelOptions, 'logger'>;
  readonly logger: Logger;
}

/** The predict kind of the offline worker: one model version kept loaded between tasks. */
export class PredictTasks implements OfflineKindHandler {
  readonly kind = 'predict' as const;
  private readonly repo: ModelRepository;
  private loaded: { key: string; model: Promise<LoadedModel> } | undefined;

  constructor(private readonly opts: PredictTasksOptions) {
    this.repo = new ModelRepository(opts.modelRepo);
  }

  private async admit(record: RunRecord): Promise<PredictParams> {
    const params = parsePredictParams(record.params, record.runId);
    if (params.tasks !== record.units || params.tasks !== record.tasks) throw new InvalidInputError(`run ${record.runId}: params count ${params.tasks} tasks, the record ${record.tasks} tasks and ${record.units} units`, { code: 'BAD_JOB_DATA' });
    if (this.opts.outputs.length === 0) throw new ConfigError(`output "${printable(params.output)}" is not allowed: this worker writes no Parquet (start it with --allow-outputs <folder>)`, { code: 'SINK_NOT_ALLOWED' });
    if (!(await under(params.output, this.opts.outputs, 'output'))) {
      throw new ConfigError(`output "${printable(params.output)}" is not allowed: this worker writes Parquet under ${this.opts.outputs.join(', ')} only (--allow-outputs)`, { code: 'SINK_NOT_ALLOWED' });
    }
    return params;
  }

  private model(params: PredictParams, log: Logger): Promise<LoadedModel> {
    const key = `${params.model.name}\u0000${params.model.version}`;
    if (this.loaded?.key === key) return this.loaded.model;
    const previous = this.loaded;
    const model = (async () => {
      if (previous !== undefined) await (await previous.model.catch(() => undefined))?.close();
      return loadModel(this.repo, params.model.name, params.model.version, { ...this.opts.model, logger: log });
    })();
    this.loaded = { key, model };
    model.catch(() => {
      if (this.loaded?.model === model) this.loaded = undefined;
    });
    return model;
  }

  async lockOf(record: RunRecord): Promise<{ key: string; value: string; what: string }> {
    // The output is checked against --allow-outputs before its lock is taken: a forged record must not lock any folder.
    const params = await this.admit(record);
    return { key: outputKeys(this.opts.prefix, params.output).lock, value: runLockValue(record.runId), what: `output "${printable(params.output)}"` };
  }

  async runTask(ctx: TaskContext): Promise<{ rows: number }> {
    const params = await this.admit(ctx.record);
    const task = parsePredictTask(ctx.payload);
    if (task.index !== ctx.index) throw new InvalidInputError(`task ${ctx.record.runId}.${ctx.index}: its payload is task ${task.index}`, { code: 'ID_MISMATCH' });
    if (!(await under(task.file, this.opts.inputs, 'input'))) {
      throw new ConfigError(`input "${printable(task.file)}" is not allowed: ${this.opts.inputs.length === 0 ? 'this worker reads no inputs (start it with --allow-inputs <folder>)' : `this worker reads inputs under ${this.opts.inputs.join(', ')} only (--allow-inputs)`}`);
    }
    const model = await this.model(params, ctx.logger);
    const r = await runPredictTask(model, task, { outputDir: params.output, nonFinite: params.nonFinite as NonFinitePolicy, signal: ctx.signal });
    await ctx.redis.sadd(offlineKeys(this.opts.prefix).done(ctx.record.runId), String(task.index));
    return { rows: r.skipped ? 0 : r.rows };
  }

  async unitsDone(record: RunRecord, redis: Redis): Promise<number> {
    return predictUnitsDoneIn(this.opts.prefix)(record, redis);
  }

  async progress(ctx: TaskContext): Promise<RunProgress> {
    const state = await ctx.redis.hget(offlineKeys(this.opts.prefix).run(ctx.record.runId), 'state');
    if (state === 'complete') return 'committed';
    return (await this.unitsDone(ctx.record, ctx.redis)) >= ctx.record.units ? 'done' : 'pending';
  }

  async finalize(ctx: TaskContext, own: Redis): Promise<void> {
    const params = await this.admit(ctx.record);
    if (!(await finishPredictOutput(params.output, params.tasks))) {
      // A part the done set counts is gone (the folder was cleaned?): forget those, so a relaunch redoes them.
      const missing = await missingParts(params);
      if (missing.length > 0) await own.srem(offlineKeys(this.opts.prefix).done(ctx.record.runId), ...missing.map(String));
      throw new DataIOError(`output "${printable(params.output)}": ${missing.length} part(s) counted done are missing (${missing.slice(0, 3).map(partName).join(', ')}…); launch the run again to redo them`);
    }
    const keys = outputKeys(this.opts.prefix, params.output);
    const running = await own.get(keys.running);
    if (running === ctx.record.runId) await own.del(keys.running);
  }

  async close(): Promise<void> {
    const loaded = this.loaded;
    this.loaded = undefined;
    await (await loaded?.model.catch(() => undefined))?.close();
  }
}

async function missingParts(params: PredictParams): Promise<number[]> {
  const loc = parseLocation(params.output);
  const present = new Set((await loc.store.list(loc.path)).map((e) => e.name));
  return Array.from({ length: params.tasks }, (_, i) => i).filter((i) => !present.has(partName(i)));
}

/** Tasks a predict run has done (its own done set), for status. */
export const predictUnitsDoneIn =
  (prefix: string) =>
  async (record: RunRecord, redis: Redis): Promise<number> =>
    redis.scard(offlineKeys(prefix).done(record.runId));
