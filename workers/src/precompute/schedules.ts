/**
 * Scheduled precompute runs on BullMQ job schedulers (queue "inferq-schedules"):
 *
 *   inferq schedule add NAME --cron "0 3 * * *" --spec DIR/team/spec.yaml --specs-root DIR  → upsertJobScheduler(NAME, { pattern }, job)
 *   inferq schedule list / remove NAME
 *   inferq worker --role precompute --model-repo M --allow-specs DIR' [--allow-outputs F]  → runs the jobs the schedulers emit
 *
 * A job carries the spec's text as it was at `schedule add` (add it again to change it), its
 * sha256, and the spec's folder relative to the specs root (`team`): never a path, a model
 * repository or a Redis URL that the worker would use as given. Jobs are untrusted (whoever can
 * write to Redis can add one): the worker validates each against {@link ScheduleJob}, reads the
 * spec's files only inside its own --allow-specs (real paths), loads models only from its own
 * --model-repo, writes Parquet only under its --allow-outputs, bounds the space, and fails a job
 * that asks for more with the reason, unretried. The table lock in precompute() keeps it to one
 * run per table at a time; a run that finds the lock held is skipped (not retried).
 */
import { createHash } from 'node:crypto';
import { readFile, realpath } from 'node:fs/promises';
import { basename, dirname, relative, resolve } from 'node:path';
import { Queue, UnrecoverableError, Worker } from 'bullmq';
import type { Job } from 'bullmq';
import type { Redis, RedisOptions } from 'ioredis';
import { z } from 'zod';
import { ConfigError, DEFAULT_PREFIX, InferqError, printable } from '@inferq/shared';
import type { Logger } from '../logging.js';
import { loadModel } from '../models/loaded-model.js';
import type { LoadModelOptions } from '../models/loaded-model.js';
import { MODEL_NAME, ModelRepository } from '../models/repository.js';
import { canonicalKey } from '../sinks/sink-set.js';
import type { SourceHealth } from '../sources/source.js';
import { connectRedis, precompute } from './precompute.js';
import type { PrecomputeSummary } from './precompute.js';
import { checkOutput, checkSpecFiles, isInside, isPlainRelative, isRemote, parseSpec, realKey } from './spec.js';
import type { LoadedSpec, SpecTrust } from './spec.js';

export const SCHEDULE_QUEUE = 'inferq-schedules';
/** Most characters of spec text a job may carry. */
export const MAX_SPEC_CHARS = 256 * 1024;
/** Most rows of a scheduled run's space, unless the worker is given another bound. */
export const DEFAULT_MAX_SPACE_ROWS = 1_000_000_000;
const SCHEDULE_NAME = /^[A-Za-z0-9_.:-]{1,200}$/;

/** A spec as a job carries it: its text, and where its folder is relative to the workers' --allow-specs. */
export const specPayloadSchema = z
  .object({
    text: z.string().min(1).max(MAX_SPEC_CHARS),
    sha256: z.string().regex(/^[0-9a-f]{64}$/, '64 hex digits'),
    dir: z
      .string()
      .max(1024)
      .refine((d) => d === '.' || isPlainRelative(d), 'a folder relative to --allow-specs (no absolute path, no "..")'),
    // eslint-disable-next-line no-control-regex -- exactly the characters refused
    file: z.string().regex(/^[^/\\\u0000-\u001f\u007f]{1,255}$/, 'a file name (no folder, no control character)'),
  })
  .strict();

export type SpecPayload = z.infer<typeof specPayloadSchema>;

/** The data of a schedule's job (format 2). Anything else in a job is refused. */
const jobSchema = z
  .object({
    v: z.literal(2),
    schedule: z.string().regex(SCHEDULE_NAME, 'letters, digits, _ . : and - (at most 200)'),
    spec: specPayloadSchema,
    to: z.enum(['redis', 'parquet', 'both']),
    model: z
      .object({
        name: z.string().regex(MODEL_NAME, 'a model folder name'),
        version: z.string().regex(/^\d{1,18}$/, 'an integer').optional(),
      })
      .strict(),
  })
  .strict();

export type ScheduleJob = z.infer<typeof jobSchema>;

export interface ScheduleInfo {
  readonly name: string;
  readonly cron: string | undefined;
  readonly next: number | undefined;
  /** The spec as recorded (`dir/file`), escaped for printing; '?' for a job of another shape. */
  readonly spec: string;
  readonly to: string;
}

const sha256 = (text: string): string => createHash('sha256').update(text).digest('hex');

/** A Redis URL, with ioredis options beside it (TLS files, user, password) when the CLI's connection flags gave any. */
export type RedisEndpoint = string | { readonly url: string; readonly options?: RedisOptions | undefined };

const endpointOf = (r: RedisEndpoint): { url: string; options: RedisOptions } => (typeof r === 'string' ? { url: r, options: {} } : { url: r.url, options: r.options ?? {} });

async function openQueue(redis: RedisEndpoint, prefix: string): Promise<{ q: Queue; close(): Promise<void> }> {
  const { url, options } = endpointOf(redis);
  const connection = await connectRedis(url, options);
  const q = new Queue(SCHEDULE_QUEUE, { connection, prefix });
  return {
    q,
    close: async () => {
      await q.close();
      await connection.quit().catch(() => connection.disconnect());
    },
  };
}

export interface AddScheduleOptions {
  /** The spec file: its text goes into the schedule. */
  readonly spec: string;
  /** The folder whose copy the workers' --allow-specs holds. Default: the spec's own folder. */
  readonly specsRoot?: string | undefined;
  readonly to: ScheduleJob['to'];
  /** When given, the spec's model and version must exist there (the worker loads from its own --model-repo). */
  readonly modelRepo?: string | undefined;
  /** Key prefix of the schedules queue. Default "inferq". */
  readonly prefix?: string | undefined;
}

/**
 * A spec file as a job carries it, checked as a worker will see it: the files it names must lie
 * inside `specsRoot` (default: the spec's own folder), whose copy is the workers' --allow-specs.
 */
export async function specPayload(specPath: string, specsRoot: string | undefined, to: ScheduleJob['to']): Promise<{ payload: SpecPayload; spec: LoadedSpec }> {
  let text: string;
  let folder: string;
  try {
    text = await readFile(specPath, 'utf8');
    folder = dirname(await realpath(specPath));
  } catch (err) {
    throw new ConfigError(`spec "${specPath}": cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (text.length > MAX_SPEC_CHARS) throw new ConfigError(`spec "${specPath}": ${text.length} characters, more than the ${MAX_SPEC_CHARS} a job holds`);
  let root: string;
  try {
    root = await realpath(specsRoot ?? folder);
  } catch (err) {
    throw new ConfigError(`--specs-root "${specsRoot}": cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
  }
  if (!isInside(folder, root)) throw new ConfigError(`spec "${specPath}": its folder ${folder} is not inside --specs-root ${root}`);
  // Local files as the worker will see them: inside the root (a copy of it is the worker's --allow-specs).
  const trust: SpecTrust = { root, rootFlag: '--specs-root', inputs: [], outputs: [], maxRows: Number.MAX_SAFE_INTEGER };
  const spec = parseSpec(text, specPath, folder, trust);
  await checkSpecFiles(spec, (path) => !isRemote(path));
  if (to !== 'redis' && spec.spec.parquet === undefined) throw new ConfigError(`${specPath}: --to ${to}: the spec has no parquet.path`);
  return { payload: { text, sha256: sha256(text), dir: relative(root, folder) || '.', file: basename(specPath) }, spec };
}

/**
 * A spec a job carries, admitted against the worker's trust: parsed with its folder under
 * --allow-specs, every file it names checked (reads none), its Parquet output checked when `to` writes one.
 */
export async function admitSpecPayload(payload: SpecPayload, to: ScheduleJob['to'], where: string, trust: SpecTrust): Promise<LoadedSpec> {
  if (sha256(payload.text) !== payload.sha256) throw new ConfigError('spec.sha256 is not the sha256 of spec.text');
  const spec = parseSpec(payload.text, `${where} spec ${payload.dir}/${payload.file}`, resolve(trust.root ?? '/', payload.dir), trust);
  await checkSpecFiles(spec);
  if (to !== 'redis') await checkOutput(spec);
  return spec;
}

/** The job a schedule emits, from a spec file; everything it names is checked now, so a bad spec fails here, not at 3 a.m. */
export async function scheduleJob(name: string, options: AddScheduleOptions): Promise<ScheduleJob> {
  if (!SCHEDULE_NAME.test(name)) throw new ConfigError(`schedule name "${printable(name)}": use letters, digits, _ . : and - (at most 200)`);
  const { payload, spec } = await specPayload(options.spec, options.specsRoot, options.to);
  if (options.modelRepo !== undefined) await new ModelRepository(options.modelRepo).resolve(spec.spec.model, spec.spec.version);
  return {
    v: 2,
    schedule: name,
    spec: payload,
    to: options.to,
    model: { name: spec.spec.model, ...(spec.spec.version === undefined ? {} : { version: spec.spec.version }) },
  };
}

/** Adds or replaces a schedule. */
export async function addSchedule(redisUrl: RedisEndpoint, name: string, cron: string, options: AddScheduleOptions): Promise<ScheduleJob> {
  const data = await scheduleJob(name, options);
  const { q, close } = await openQueue(redisUrl, options.prefix ?? DEFAULT_PREFIX);
  try {
    await q.upsertJobScheduler(name, { pattern: cron }, { name: 'precompute', data, opts: { attempts: 1, removeOnComplete: 100, removeOnFail: 100 } });
  } catch (err) {
    if (err instanceof InferqError) throw err;
    throw new ConfigError(`schedule "${name}": ${(err as Error).message} (cron "${cron}")`);
  } finally {
    await close();
  }
  return data;
}

export async function listSchedules(redisUrl: RedisEndpoint, prefix = DEFAULT_PREFIX): Promise<ScheduleInfo[]> {
  const { q, close } = await openQueue(redisUrl, prefix);
  try {
    return (await q.getJobSchedulers(0, -1, true)).map((s) => {
      // Whatever a scheduler holds is shown escaped: it may not be ours.
      const data = jobSchema.safeParse(s.template?.data);
      return {
        name: printable(s.key),
        cron: s.pattern === undefined ? undefined : printable(s.pattern),
        next: s.next,
        spec: data.success ? printable(`${data.data.spec.dir}/${data.data.spec.file}`) : '?',
        to: data.success ? data.data.to : '?',
      };
    });
  } finally {
    await close();
  }
}

export async function removeSchedule(redisUrl: RedisEndpoint, name: string, prefix = DEFAULT_PREFIX): Promise<boolean> {
  const { q, close } = await openQueue(redisUrl, prefix);
  try {
    return await q.removeJobScheduler(name);
  } finally {
    await close();
  }
}

/**
 * Validates a job's data against the worker's trust; returns what to run, or throws a
 * ConfigError naming the first field or file that is not allowed. Reads no file.
 */
export async function admitJob(data: unknown, trust: SpecTrust): Promise<{ job: ScheduleJob; spec: LoadedSpec }> {
  if (typeof data === 'object' && data !== null && (data as { v?: unknown }).v === 1) {
    throw new ConfigError('job format 1 (a spec path and a model repository) is no longer run: add the schedule again with `inferq schedule add`');
  }
  const parsed = jobSchema.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const where = issue.path.length === 0 ? '(job data)' : issue.path.join('.');
    if (issue.code === 'unrecognized_keys') {
      const hints = issue.keys.map((k) => (k === 'modelRepo' ? ' (a worker loads models only from its own --model-repo)' : '')).join('');
      throw new ConfigError(`${where}: unknown field${issue.keys.length === 1 ? '' : 's'} ${issue.keys.map((k) => `"${k}"`).join(', ')}${hints}`);
    }
    throw new ConfigError(`${where}: ${issue.message}`);
  }
  const job = parsed.data;
  if (sha256(job.spec.text) !== job.spec.sha256) throw new ConfigError('spec.sha256 is not the sha256 of spec.text');
  // The model is compared before any file is looked at.
  const parsedSpec = parseSpec(job.spec.text, `schedule "${job.schedule}" spec ${job.spec.dir}/${job.spec.file}`, resolve(trust.root ?? '/', job.spec.dir), trust);
  const { model, version } = parsedSpec.spec;
  if (model !== job.model.name || version !== job.model.version) {
    throw new ConfigError(`model: the job names "${job.model.name}" version ${job.model.version ?? '(newest)'}, its spec "${model}" version ${version ?? '(newest)'}`);
  }
  const spec = await admitSpecPayload(job.spec, job.to, `schedule "${job.schedule}"`, trust);
  return { job, spec };
}

export interface PrecomputeWorkerOptions {
  readonly redis: string;
  /** ioredis options beside the URL: TLS files, user, password. */
  readonly redisOptions?: RedisOptions | undefined;
  /** Key prefix of the schedules queue. Default "inferq". */
  readonly prefix?: string | undefined;
  /** The model repository (a local folder): the only one scheduled runs load from. */
  readonly modelRepo: string;
  /** The folder of specs' files (Parquet inputs, featurizers). Default: none, so only specs that name no file run. */
  readonly allowSpecs?: string | undefined;
  /** Folders under which specs may read remote Parquet inputs (webhdfs://, hdfs://) and predict tasks their inputs (local folders too). Default: none. */
  readonly allowInputs?: readonly string[] | undefined;
  /** Folders (local, file://, webhdfs://, hdfs://) under which specs may write Parquet. Default: none. */
  readonly allowOutputs?: readonly string[] | undefined;
  /** Most rows of a scheduled space. Default {@link DEFAULT_MAX_SPACE_ROWS}. */
  readonly maxSpaceRows?: number | undefined;
  readonly logger: Logger;
  readonly model: Omit<LoadModelOptions, 'logger'>;
  readonly onRun?: (summary: PrecomputeSummary) => void;
}

type RunResult = { runId: string; rows: number } | { skipped: string };

/** The worker role that runs scheduled precompute jobs, one at a time. */
export class PrecomputeWorker {
  private connection: Redis | undefined;
  private worker: Worker | undefined;
  private trust: SpecTrust | undefined;
  private readonly repo: ModelRepository;

  constructor(private readonly opts: PrecomputeWorkerOptions) {
    this.repo = new ModelRepository(opts.modelRepo);
  }

  /** Checks the allowed folders, connects (an unreachable Redis fails here), then takes jobs. */
  async start(): Promise<void> {
    this.trust = await workerTrust(this.opts);
    this.connection = await connectRedis(this.opts.redis, { ...this.opts.redisOptions, maxRetriesPerRequest: null });
    this.worker = new Worker(SCHEDULE_QUEUE, (job: Job) => this.run(job), { connection: this.connection, prefix: this.opts.prefix ?? DEFAULT_PREFIX, concurrency: 1, autorun: false });
    this.worker.on('error', (err) => this.opts.logger.error({ err }, 'schedule worker error'));
    void this.worker.run().catch((err: unknown) => this.opts.logger.error({ err }, 'schedule worker stopped'));
    await this.worker.waitUntilReady();
  }

  /** Connected while its Redis connection is ready (readiness of `inferq worker --role precompute`). */
  health(): SourceHealth {
    const status = this.connection?.status;
    return status === 'ready' ? { connected: true } : { connected: false, reason: `redis connection is ${status ?? 'not open'}` };
  }

  private async run(job: Job): Promise<RunResult> {
    const schedule = printable(String(typeof job.data?.schedule === 'string' ? job.data.schedule : (job.repeatJobKey ?? job.name)));
    let admitted: { job: ScheduleJob; spec: LoadedSpec };
    try {
      admitted = await admitJob(job.data, this.trust!);
    } catch (err) {
      if (!(err instanceof InferqError)) throw err;
      const reason = printable(err.message, 1000);
      this.opts.logger.warn({ jobId: printable(job.id ?? '?'), schedule, reason }, 'scheduled job refused');
      throw new UnrecoverableError(`refused: ${reason}`);
    }
    const { spec } = admitted;
    const log = this.opts.logger.child({ schedule, jobId: printable(job.id ?? '?'), table: spec.spec.table });
    try {
      return await this.execute(admitted.job, spec, log);
    } catch (err) {
      // Our errors may quote the spec (untrusted): escaped like the refusals.
      if (err instanceof InferqError) log.error({ reason: printable(err.message, 1000), retriable: err.retriable }, 'scheduled precompute run failed');
      else log.error({ err }, 'scheduled precompute run failed');
      // A run that cannot succeed as asked is not retried, whatever attempts the job names.
      if (err instanceof InferqError && !err.retriable) throw new UnrecoverableError(printable(err.message, 1000));
      throw err;
    }
  }

  private async execute(job: ScheduleJob, spec: LoadedSpec, log: Logger): Promise<RunResult> {
    const model = await loadModel(this.repo, spec.spec.model, spec.spec.version, { ...this.opts.model, logger: log });
    try {
      const summary = await precompute({ spec, model, to: job.to, redis: this.opts.redis, ...(this.opts.redisOptions === undefined ? {} : { redisOptions: this.opts.redisOptions }), logger: log });
      log.info({ runId: summary.runId, rows: summary.rows, seconds: summary.seconds }, 'scheduled precompute run complete');
      this.opts.onRun?.(summary);
      return { runId: summary.runId, rows: summary.rows };
    } catch (err) {
      if (err instanceof InferqError && err.retriable && /already in progress/.test(err.message)) {
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
    await this.connection?.quit().catch(() => this.connection?.disconnect());
  }
}

/** The worker's trust from its options: real paths and canonical folders, each checked to exist where local. */
export async function workerTrust(opts: PrecomputeWorkerOptions): Promise<SpecTrust> {
  let root: string | undefined;
  if (opts.allowSpecs !== undefined) {
    try {
      root = await realpath(opts.allowSpecs);
    } catch (err) {
      throw new ConfigError(`--allow-specs "${opts.allowSpecs}": cannot read it (${(err as NodeJS.ErrnoException).code ?? (err as Error).message})`);
    }
  }
  const folders = (flag: string, uris: readonly string[]): string[] =>
    uris.map((uri) => {
      try {
        return canonicalKey(uri);
      } catch (err) {
        throw new ConfigError(`${flag} "${uri}": ${(err as Error).message}`);
      }
    });
  // Local folders here serve predict tasks' inputs only: a spec's local files are read inside --allow-specs.
  const inputs = await Promise.all(folders('--allow-inputs', opts.allowInputs ?? []).map(realKey));
  const outputs = await Promise.all(folders('--allow-outputs', opts.allowOutputs ?? []).map(realKey));
  return { root, rootFlag: '--allow-specs', inputs, outputs, maxRows: opts.maxSpaceRows ?? DEFAULT_MAX_SPACE_ROWS };
}
