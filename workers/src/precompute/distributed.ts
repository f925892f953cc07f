/**
 * A precompute run split over processes: queue tasks taken by `inferq worker --role precompute`,
 * or `--shard i/N` processes. Each computes ranges of chunks with the single-process code
 * (chunks.ts) into the same run state (table-run.ts); whoever finds every chunk done commits.
 *
 * ```
 *  params (from the run record: untrusted) ─► spec admitted against the worker's trust, model
 *  loaded from its --model-repo at the pinned version, space rebuilt and checked against the
 *  launch's (rows, chunks) ─► prepared run (cached between tasks of the run)
 *  task [from, to) ─► chunks not in the checkpoint ─► computeChunks ─► progress ─► finalize
 * ```
 */
import { tableKeys, ConfigError, printable } from '@inferq/shared';
import type { TableKeys } from '@inferq/shared';
import type { Redis } from 'ioredis';
import { z } from 'zod';
import { parseLocation } from '../io/store.js';
import type { Location } from '../io/store.js';
import type { Logger } from '../logging.js';
import { loadModel } from '../models/loaded-model.js';
import type { LoadedModel, LoadModelOptions } from '../models/loaded-model.js';
import { MODEL_NAME, ModelRepository } from '../models/repository.js';
import type { OfflineKindHandler, RunProgress, TaskContext } from '../offline/kind.js';
import { runLockValue } from '../offline/lock.js';
import { parseRunParams, taskUnits } from '../offline/record.js';
import type { RunRecord } from '../offline/record.js';
import { bucketsOf, computeChunks } from './chunks.js';
import { checkBuckets } from './precompute.js';
import { RespConnection } from './resp.js';
import { admitSpecPayload, specPayloadSchema } from './schedules.js';
import { makeEncoder, openSpace } from './space.js';
import type { Encoder, Space } from './space.js';
import { parseSpec } from './spec.js';
import type { LoadedSpec, SpecTrust } from './spec.js';
import { commitRun, finishParquet } from './table-run.js';
import type { PrecomputeTarget } from './table-run.js';

const count = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

/** A distributed precompute run's params, as its record holds them (JSON). */
export const precomputeParamsSchema = z
  .object({
    spec: specPayloadSchema,
    to: z.enum(['redis', 'parquet', 'both']),
    /** The version is pinned at launch: every worker computes with the same one. */
    model: z.object({ name: z.string().regex(MODEL_NAME, 'a model folder name'), version: z.string().regex(/^\d{1,18}$/, 'an integer') }).strict(),
    /** The space as the launcher saw it: a worker that sees another (a changed input file) refuses the task. */
    totalRows: count,
    chunks: count,
  })
  .strict();

export type PrecomputeParams = z.infer<typeof precomputeParamsSchema>;

export const parsePrecomputeParams = (text: string, runId: string): PrecomputeParams => parseRunParams(precomputeParamsSchema, text, runId);

/** What computing a run's chunks needs, kept between its tasks (closing it leaves the model to its owner). */
export interface PreparedRun {
  readonly runId: string;
  readonly spec: LoadedSpec;
  readonly to: PrecomputeTarget;
  readonly keys: TableKeys;
  readonly buckets: number;
  readonly parquet: Location | undefined;
  readonly space: Space;
  readonly encode: Encoder;
  readonly model: LoadedModel;
  /** The rows' connection (Redis targets). */
  readonly bulk: RespConnection | undefined;
  close(): Promise<void>;
}

/** Opens the space and the rows' connection of a run whose spec and model are in hand; checks the space is the launcher's. */
export async function prepareRun(runId: string, spec: LoadedSpec, to: PrecomputeTarget, model: LoadedModel, redis: Redis, expect: { totalRows: number; chunks: number }): Promise<PreparedRun> {
  const { space, close: closeSpace } = await openSpace(spec);
  let bulk: RespConnection | undefined;
  try {
    if (space.total !== expect.totalRows || space.chunkCount !== expect.chunks) {
      throw new ConfigError(`run ${runId}: the space has ${space.total} rows in ${space.chunkCount} chunks here, ${expect.totalRows} in ${expect.chunks} at launch (did an input change?)`);
    }
    const buckets = bucketsOf(space.total);
    checkBuckets(buckets, space);
    const encode = await makeEncoder(spec, space, model.inputs);
    if (to !== 'parquet') bulk = await RespConnection.open(redis.options);
    return {
      runId,
      spec,
      to,
      keys: tableKeys(spec.spec.redis.prefix, spec.spec.table),
      buckets,
      parquet: to === 'redis' ? undefined : parseLocation(spec.spec.parquet!.path),
      space,
      encode,
      model,
      bulk,
      close: async () => {
        bulk?.close();
        await closeSpace();
      },
    };
  } catch (err) {
    bulk?.close();
    await closeSpace();
    throw err;
  }
}

/** Computes the chunks of [from, to) not in the run's checkpoint; returns the rows written. */
export async function computeRange(p: PreparedRun, range: readonly [number, number], redis: Redis, signal?: AbortSignal, onChunk?: (index: number, rows: number) => void): Promise<number> {
  const [from, to] = range;
  if (to <= from) return 0;
  const indices = Array.from({ length: to - from }, (_, i) => String(from + i));
  const member = await redis.smismember(p.keys.done(p.runId), ...indices);
  const done = new Set(indices.filter((_, i) => member[i] === 1).map(Number));
  return computeChunks(
    { keys: p.keys, runId: p.runId, buckets: p.buckets, parquet: p.parquet, bulk: p.bulk, checkpoint: p.to === 'parquet' ? redis : undefined },
    { spec: p.spec, space: p.space, model: p.model, encode: p.encode, range, signal, onChunk },
    (i) => done.has(i),
  );
}

/** Chunks done, and whether the run is committed, done but not committed, or not done. */
export async function runProgress(keys: TableKeys, runId: string, chunks: number, redis: Redis): Promise<{ done: number; progress: RunProgress }> {
  const [status, done] = await Promise.all([redis.hget(keys.meta(runId), 'status'), redis.scard(keys.done(runId))]);
  if (status === 'complete') return { done: chunks, progress: 'committed' };
  return { done, progress: done >= chunks ? 'done' : 'pending' };
}

/** Makes a run whose chunks are all written visible: `_SUCCESS`, then the guarded swap (or, Parquet only, the guarded completion). */
export async function finalizeRun(p: Pick<PreparedRun, 'runId' | 'keys' | 'buckets' | 'parquet' | 'to' | 'spec'>, own: Redis): Promise<boolean> {
  if (p.parquet !== undefined) await finishParquet(p.parquet, p.runId);
  return commitRun(own, p.keys, p.runId, p.to === 'parquet' ? undefined : { buckets: p.buckets, graceSeconds: p.spec.spec.redis.graceSeconds });
}

export interface PrecomputeTasksOptions {
  /** What specs from the queue may reach (the worker's --allow-specs / --allow-inputs / --allow-outputs). */
  readonly trust: SpecTrust;
  /** The worker's --model-repo: the only one tasks load from. */
  readonly modelRepo: string;
  readonly model: Omit<LoadModelOptions, 'logger'>;
  readonly logger: Logger;
}

interface Admitted {
  readonly params: PrecomputeParams;
  readonly spec: LoadedSpec;
}

/** The precompute kind of the offline worker: one prepared run kept (model loaded) between its tasks. */
export class PrecomputeTasks implements OfflineKindHandler {
  readonly kind = 'precompute' as const;
  private readonly repo: ModelRepository;
  private current: { runId: string; params: string; run: Promise<PreparedRun> } | undefined;
  private loaded: { key: string; model: Promise<LoadedModel> } | undefined;

  constructor(private readonly opts: PrecomputeTasksOptions) {
    this.repo = new ModelRepository(opts.modelRepo);
  }

  /** The last run admitted: its tasks are admitted once per worker, not at every step of every task. */
  private admitted: { key: string; result: Promise<Admitted> } | undefined;

  private admit(record: RunRecord): Promise<Admitted> {
    const key = `${record.runId}\u0000${record.units}\u0000${record.params}`;
    if (this.admitted?.key === key) return this.admitted.result;
    const result = this.check(record);
    this.admitted = { key, result };
    result.catch(() => {
      if (this.admitted?.result === result) this.admitted = undefined;
    });
    return result;
  }

  private async check(record: RunRecord): Promise<Admitted> {
    const params = parsePrecomputeParams(record.params, record.runId);
    const spec = await admitSpecPayload(params.spec, params.to, `run ${record.runId}`, this.opts.trust);
    const { model, version } = spec.spec;
    if (model !== params.model.name || (version !== undefined && version !== params.model.version)) {
      throw new ConfigError(`run ${record.runId}: params name model "${params.model.name}" version ${params.model.version}, its spec "${model}" version ${version ?? '(newest)'}`);
    }
    if (record.units !== params.chunks) throw new ConfigError(`run ${record.runId}: the record counts ${record.units} units, its params ${params.chunks} chunks`, { code: 'BAD_JOB_DATA' });
    return { params, spec };
  }

  private prepared(record: RunRecord, redis: Redis, log: Logger): Promise<PreparedRun> {
    if (this.current?.runId === record.runId && this.current.params === record.params) return this.current.run;
    const previous = this.current;
    const run = (async () => {
      if (previous !== undefined) await (await previous.run.catch(() => undefined))?.close();
      const { params, spec } = await this.admit(record);
      return prepareRun(record.runId, spec, params.to, await this.model(params, log), redis, params);
    })();
    this.current = { runId: record.runId, params: record.params, run };
    // A failed preparation is not kept: the next task tries again.
    run.catch(() => {
      if (this.current?.run === run) this.current = undefined;
    });
    return run;
  }

  /** The run's model version, kept loaded for the next runs of the same version (a worker serves run after run). */
  private model(params: PrecomputeParams, log: Logger): Promise<LoadedModel> {
    const key = `${params.model.name}\u0000${params.model.version}`;
    if (this.loaded?.key === key) return this.loaded.model;
    const previous = this.loaded;
    const model = (async () => {
      await (await previous?.model.catch(() => undefined))?.close();
      return loadModel(this.repo, params.model.name, params.model.version, { ...this.opts.model, logger: log });
    })();
    this.loaded = { key, model };
    model.catch(() => {
      if (this.loaded?.model === model) this.loaded = undefined;
    });
    return model;
  }

  async lockOf(record: RunRecord): Promise<{ key: string; value: string; what: string }> {
    const { spec } = await this.admit(record);
    return { key: tableKeys(spec.spec.redis.prefix, spec.spec.table).lock, value: runLockValue(record.runId), what: `table "${spec.spec.table}"` };
  }

  async runTask(ctx: TaskContext): Promise<{ rows: number }> {
    const p = await this.prepared(ctx.record, ctx.redis, ctx.logger);
    // A committed run's late task writes nothing (its checkpoint is gone: it would write every chunk again).
    if ((await ctx.redis.hget(p.keys.meta(p.runId), 'status')) === 'complete') return { rows: 0 };
    if ((await ctx.redis.exists(p.keys.meta(p.runId))) === 0) throw new ConfigError(`run ${p.runId}: table "${printable(p.spec.spec.table)}" has no meta for it`, { code: 'BAD_JOB_DATA' });
    const rows = await computeRange(p, taskUnits(ctx.record.units, ctx.record.tasks, ctx.index), ctx.redis, ctx.signal);
    return { rows };
  }

  async unitsDone(record: RunRecord, redis: Redis): Promise<number> {
    const { spec } = await this.admit(record);
    return (await runProgress(tableKeys(spec.spec.redis.prefix, spec.spec.table), record.runId, record.units, redis)).done;
  }

  async progress(ctx: TaskContext): Promise<RunProgress> {
    const p = await this.prepared(ctx.record, ctx.redis, ctx.logger);
    return (await runProgress(p.keys, p.runId, ctx.record.units, ctx.redis)).progress;
  }

  async finalize(ctx: TaskContext, own: Redis): Promise<void> {
    const p = await this.prepared(ctx.record, ctx.redis, ctx.logger);
    if (await finalizeRun(p, own)) ctx.logger.info({ table: p.spec.spec.table, run: p.runId }, 'precompute run published');
  }

  async close(): Promise<void> {
    const { current, loaded } = this;
    this.current = undefined;
    this.loaded = undefined;
    await (await current?.run.catch(() => undefined))?.close();
    await (await loaded?.model.catch(() => undefined))?.close();
  }
}

/** Chunks a run has done, for its status (read only: the spec is parsed, not admitted). */
export async function precomputeUnitsDone(record: RunRecord, redis: Redis): Promise<number> {
  const params = parsePrecomputeParams(record.params, record.runId);
  const spec = parseSpec(params.spec.text, `run ${record.runId}`, '/');
  return (await runProgress(tableKeys(spec.spec.redis.prefix, spec.spec.table), record.runId, record.units, redis)).done;
}
