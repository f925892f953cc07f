/**
 * `inferq predict`: Parquet in → model → Parquet out, no queue, no server.
 *
 *   one file → one file            predictParquet, as a whole (a temporary name, renamed)
 *   file, folder or glob → folder/ planPredict → runPredictTask for each task in turn
 *                                  → part-<i>.parquet … → _SUCCESS; a rerun skips the parts there
 *   … --distributed                planPredict → launchDistributedPredict: one queue task per part,
 *                                  run by `inferq worker --role precompute` processes
 */
import { Option } from 'commander';
import type { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { ConfigError, DEFAULT_PREFIX, DataIOError, InferqError } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { createLogger } from '../../logging.js';
import { loadModel } from '../../models/loaded-model.js';
import type { LoadedModel } from '../../models/loaded-model.js';
import { ModelRepository } from '../../models/repository.js';
import { predictParquet } from '../../predict/predict.js';
import { inputCovers, isGlob, localInput, locationKind, nameInput } from '../../predict/inputs.js';
import { planPredict } from '../../predict/plan.js';
import type { PredictPlan } from '../../predict/plan.js';
import { SUCCESS_MARKER, finishPredictOutput, partName, runPredictTask } from '../../predict/task.js';
import type { LaunchedPredict } from '../../offline/predict-launch.js';
import { OFFLINE_QUEUE } from '../../offline/record.js';
import { formatStatus } from '../../offline/status.js';
import type { RunStatus } from '../../offline/status.js';
import { LocalStore, parseLocation } from '../../io/store.js';
import type { Location } from '../../io/store.js';
import { parseDevice } from '../../runners/device.js';
import type { Device } from '../../runners/runner.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { formatDevice } from '../../runners/runner.js';
import { defaultRedisUrl, modelRepoDir, positiveInt } from '../flags.js';
import { guardOutput } from '../output-guard.js';
import { addConnectionOptions, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';
import { ProgressBar, fmt } from '../progress.js';

interface PredictFlags extends ConnectionFlags {
  modelRepo: string;
  model: string;
  version?: string;
  input: string;
  output: string;
  device: string;
  maxBatch?: number;
  maxDelayMs?: number;
  threads?: number;
  instances?: number;
  nan: NonFinitePolicy;
  rowsPerPart?: number;
  progress: boolean;
  overwrite: boolean;
  distributed: boolean;
  queue?: string;
  wait: boolean;
  timeoutMs?: number;
  redis: string;
  prefix: string;
}

async function predictCommand(flags: PredictFlags): Promise<void> {
  // predict prints its own summary; its logs are warnings and errors unless INFERQ_LOG_LEVEL says otherwise.
  const logger = createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'predict' } });
  const device = parseDevice(flags.device);
  // A folder output (a trailing "/", or a folder that exists) gets part files and _SUCCESS, as Spark and Hive jobs write.
  const folderOutput = flags.output.endsWith('/') || (await locationKind(flags.output)) === 'dir';
  const manyInputs = isGlob(flags.input) || (await locationKind(flags.input)) === 'dir';
  if (flags.wait && !flags.distributed) throw new ConfigError('predict: --wait follows a --distributed run');
  if (flags.distributed) {
    if (!folderOutput) throw new ConfigError(`--distributed: --output "${flags.output}" must be a folder (end it with "/"), where the workers write one part file per task`);
    return predictDistributed(flags, logger);
  }
  if (folderOutput) return predictFolder(flags, device, logger);
  if (manyInputs) {
    throw new ConfigError(`--input "${flags.input}" is a folder or glob: --output "${flags.output}" must be a folder (end it with "/"), which gets one part file per task`);
  }
  return predictFile(flags, device, logger);
}

async function openModel(flags: PredictFlags, device: Device, logger: Logger): Promise<LoadedModel> {
  const repo = new ModelRepository(await modelRepoDir(flags.modelRepo));
  return loadModel(repo, flags.model, flags.version, {
    device,
    logger,
    batching: { maxBatchSize: flags.maxBatch, maxDelayMs: flags.maxDelayMs },
    ...throughputThreads(flags, device),
  });
}

/** Runs `work` with SIGINT/SIGTERM turned into an abort of its signal. */
async function interruptible<T>(logger: Logger, onStop: string | (() => string), work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    const what = typeof onStop === 'string' ? onStop : onStop();
    logger.warn({ signal }, `interrupted: stopping; ${what}`);
    abort.abort(new InferqError(`interrupted by ${signal}; ${what}`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    return await work(abort.signal);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

/** One file in, one file out: written whole under a temporary name; an HDFS file is read from, or published from, a local copy. */
async function predictFile(flags: PredictFlags, device: Device, logger: Logger): Promise<void> {
  const target = parseLocation(flags.output);
  await guardOutput({ input: flags.input, target, overwrite: flags.overwrite });
  const bar = new ProgressBar();
  const remote = !(target.store instanceof LocalStore);
  const input = parseLocation(flags.input).store instanceof LocalStore ? undefined : await localInput(flags.input);
  const staging = remote ? await mkdtemp(join(tmpdir(), 'inferq-predict-')) : undefined;
  try {
    const model = await openModel(flags, device, logger);
    await interruptible(logger, 'no output written', async (signal) => {
      const summary = await predictParquet(model, {
        input: input?.path ?? flags.input,
        output: staging === undefined ? target.path : join(staging, 'part.parquet'),
        nonFinite: flags.nan,
        signal,
        ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number }) => bar.update(p.rows, p.totalRows) } : {}),
      });
      bar.done();
      if (staging !== undefined) await target.store.putFile(summary.output, target.path);
      process.stdout.write(
        `inferq predict: ${fmt(summary.rows)} rows in ${summary.seconds.toFixed(2)} s = ${fmt(summary.rowsPerSecond)} rows/s; ` +
          `${fmt(summary.batches)} batches, mean batch ${summary.meanBatchSize.toFixed(1)} rows; ` +
          `model ${model.name}:${model.version} on ${formatDevice(model.runner.device)} → ${remote ? target.uri : summary.output} (${fmt(summary.bytes)} bytes)\n`,
      );
    }).finally(() => model.close());
  } catch (err) {
    throw input === undefined ? err : nameInput(err, input, flags.input);
  } finally {
    bar.done();
    await input?.release();
    if (staging !== undefined) await rm(staging, { recursive: true, force: true });
  }
}

/** Any number of files in, one part per task out; parts already there are kept (a resumed run) unless --overwrite. */
async function predictFolder(flags: PredictFlags, device: Device, logger: Logger): Promise<void> {
  const started = performance.now();
  const outDir = flags.output.replace(/\/+$/, '') || '/';
  const out = parseLocation(outDir);
  const successPath = posix.join(out.path, SUCCESS_MARKER);
  // A complete output (its _SUCCESS there) is refused without --overwrite; an incomplete one is resumed.
  await guardOutput({ input: flags.input, target: { ...out, path: successPath, uri: flags.output }, overwrite: flags.overwrite });
  const plan = await planPredict(flags.input, { ...(flags.rowsPerPart === undefined ? {} : { targetRows: flags.rowsPerPart }) });
  refuseOverlap(flags, plan, out);
  if (plan.ignored.length > 0) logger.warn({ ignored: plan.ignored.slice(0, 20), count: plan.ignored.length }, 'files in the input folders that are not *.parquet are not read');
  if (flags.overwrite) await clearParts(out);
  const model = await openModel(flags, device, logger);
  const bar = new ProgressBar();
  let rows = 0;
  let predicted = 0;
  let batches = 0;
  let batchedRows = 0;
  let bytes = 0;
  let skipped = 0;
  try {
    await interruptible(logger, 'the parts written are kept and a rerun resumes', async (signal) => {
      for (const task of plan.tasks) {
        const done = rows;
        const r = await runPredictTask(model, task, {
          outputDir: outDir,
          nonFinite: flags.nan,
          signal,
          ...(flags.progress ? { onProgress: (p: { rows: number }) => bar.update(done + p.rows, plan.totalRows) } : {}),
        });
        rows += r.rows;
        batches += r.batches;
        batchedRows += r.batchedRows;
        bytes += r.bytes;
        if (r.skipped) skipped++;
        else predicted += r.rows;
        if (flags.progress) bar.update(rows, plan.totalRows);
      }
      if (!(await finishPredictOutput(outDir, plan.tasks.length))) {
        throw new DataIOError(`--output "${flags.output}": a part file vanished while the run went on; rerun to redo it`);
      }
    });
  } finally {
    bar.done();
    await model.close();
  }
  const seconds = (performance.now() - started) / 1000;
  const n = plan.tasks.length;
  const base = out.store instanceof LocalStore ? out.path : outDir;
  const parts = n === 1 ? partName(0) : `${partName(0).replace('.parquet', '')}…${partName(n - 1).replace('part-', '')}`;
  const plural = (k: number, word: string): string => `${fmt(k)} ${word}${k === 1 ? '' : 's'}`;
  process.stdout.write(
    `inferq predict: ${fmt(predicted)} rows in ${seconds.toFixed(2)} s = ${fmt(predicted / seconds)} rows/s; ` +
      `${fmt(batches)} batches, mean batch ${(batches === 0 ? 0 : batchedRows / batches).toFixed(1)} rows; ` +
      `model ${model.name}:${model.version} on ${formatDevice(model.runner.device)} → ${base}/${parts} ` +
      `(${plural(n, 'part')} from ${plural(plan.inputs.length, 'file')}, ${fmt(skipped)} already there; ${fmt(bytes)} bytes written)\n`,
  );
}

/** Plans here, then enqueues one task per part for the offline workers (launchDistributedPredict); --wait follows the run. */
async function predictDistributed(flags: PredictFlags, logger: Logger): Promise<void> {
  // Parts of a run the workers may still be writing cannot be removed safely from here.
  if (flags.overwrite) throw new ConfigError(`--distributed: --overwrite is not supported; remove the output folder "${flags.output}" first, then launch`);
  const outDir = flags.output.replace(/\/+$/, '') || '/';
  const out = parseLocation(outDir);
  await guardOutput({ input: flags.input, target: { ...out, path: posix.join(out.path, SUCCESS_MARKER), uri: flags.output }, overwrite: false });
  const plan = await planPredict(flags.input, { ...(flags.rowsPerPart === undefined ? {} : { targetRows: flags.rowsPerPart }) });
  refuseOverlap(flags, plan, out);
  if (plan.ignored.length > 0) logger.warn({ ignored: plan.ignored.slice(0, 20), count: plan.ignored.length }, 'files in the input folders that are not *.parquet are not read');
  // Workers on other hosts get absolute local paths (the plan's files already are).
  const local = (uri: string): string => (parseLocation(uri).store instanceof LocalStore ? parseLocation(uri).path : uri);
  const modelRepo = flags.version === undefined ? await modelRepoDir(flags.modelRepo) : undefined;
  // BullMQ and the launcher load only for --distributed: a local predict starts without them.
  const { launchDistributedPredict } = await import('../../offline/predict-launch.js');
  const bar = new ProgressBar();
  let run: LaunchedPredict;
  try {
    // The run id is known from the first progress report of --wait.
    let runId: string | undefined;
    const goesOn = (): string => (runId === undefined ? 'the run goes on' : `run ${runId} goes on (inferq precompute status ${runId})`);
    run = await interruptible(logger, goesOn, (signal) =>
      launchDistributedPredict({
        redis: flags.redis,
        redisOptions: redisClientOptions(flags, flags.redis),
        prefix: flags.prefix,
        queue: flags.queue,
        model: flags.model,
        version: flags.version,
        modelRepo,
        input: local(flags.input),
        output: local(outDir),
        plan,
        nonFinite: flags.nan,
        wait: flags.wait,
        timeoutMs: flags.timeoutMs,
        signal,
        logger,
        onProgress: (st: RunStatus) => {
          runId = st.runId;
          if (flags.progress) bar.update(st.rowsDone, st.totalRows);
        },
      }),
    );
  } finally {
    bar.done();
  }
  const what = run.finalized
    ? 'every part was there: _SUCCESS written'
    : `${fmt(run.enqueued!.added + run.enqueued!.retried)} tasks enqueued on ${flags.queue ?? OFFLINE_QUEUE} (${fmt(run.enqueued!.present)} already queued)`;
  process.stdout.write(
    `inferq predict: run ${run.runId}${run.resumed ? ' (resumed)' : ''}: ${fmt(run.tasks)} tasks (${fmt(run.tasksDone)} done before), ${fmt(run.totalRows)} rows; ${what}\n` +
      (run.status === undefined ? '' : `inferq predict: ${formatStatus(run.status)}\n`),
  );
}

/** The output folder must not feed the input: its parts would be read back as input by a rerun. */
function refuseOverlap(flags: PredictFlags, plan: PredictPlan, out: Location): void {
  const inputStore = parseLocation(plan.inputs[0]!).store;
  if (inputStore.description !== out.store.description) return;
  const inside = plan.inputs.find((f) => parseLocation(f).path.startsWith(`${out.path}/`));
  if (inside !== undefined) {
    throw new ConfigError(`--output "${flags.output}" holds the input file "${inside}": choose an output folder outside the input`);
  }
  if (inputCovers(flags.input, posix.join(out.path, partName(0)))) {
    throw new ConfigError(`--output "${flags.output}" lies inside --input "${flags.input}": its parts would be read as input by a rerun; choose an output folder outside the input`);
  }
}

/** --overwrite: the parts and marker of an earlier run go first (a smaller rerun would otherwise leave extra parts). */
async function clearParts(out: Location): Promise<void> {
  for (const e of await out.store.list(out.path)) {
    if (e.type === 'file' && (/^part-\d{5,}\.parquet$/.test(e.name) || e.name === SUCCESS_MARKER)) await out.store.delete(posix.join(out.path, e.name));
  }
}

export function registerPredict(program: Command): void {
  const command = program
    .command('predict')
    .description('Predict Parquet offline (no queue, no server): a file, folder or glob in → model → a Parquet file or a folder of parts out.')
    .requiredOption('--model-repo <dir>', 'model repository: <dir>/<name>/<version>/model.onnx (a local folder, or webhdfs:// / hdfs://, copied locally at start)')
    .requiredOption('--model <name>', 'model name')
    .option('--version <v>', 'model version (default: the newest its versionPolicy serves)')
    .requiredOption('--input <file|dir|glob>', 'input: a Parquet file, a folder (every *.parquet below it, skipping _ and . names) or a glob (* and ?); local, file://, webhdfs:// or hdfs://; columns named like model inputs feed them')
    .requiredOption('--output <file.parquet|dir/>', 'output Parquet file, or a folder (ending in "/", or existing): part-<i>.parquet per task + _SUCCESS, resumed by a rerun; local, file://, webhdfs:// or hdfs://; written under temporary names, renamed on success')
    .option('--rows-per-part <n>', 'folder output: about this many rows per part (whole row groups; default 1,000,000)', positiveInt)
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--max-batch <n>', 'largest batch in rows (overrides config.yaml)', positiveInt)
    .option('--max-delay-ms <n>', 'longest wait for a batch to fill', Number)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .addOption(new Option('--nan <policy>', 'NaN/Inf in float features').choices(['reject', 'pass']).default('reject'))
    .option('--overwrite', 'replace an existing output (default: an existing file or a complete folder is refused; an incomplete folder is resumed)', false)
    .option('--no-progress', 'no progress bar')
    .option('--distributed', 'enqueue one task per part for `inferq worker --role precompute` processes and return (see --wait); needs a folder output', false)
    .option('--queue <name>', `--distributed: the offline queue (the workers' --queue; default ${OFFLINE_QUEUE})`)
    .option('--wait', '--distributed: follow the run until it is complete; exit 1 with one line if it fails or --timeout-ms passes', false)
    .option('--timeout-ms <n>', '--wait: give up waiting after this long (the run goes on)', positiveInt)
    .option('--redis <url>', '--distributed: Redis URL', defaultRedisUrl())
    .option('--prefix <prefix>', '--distributed: key prefix of the offline queue and run records', DEFAULT_PREFIX)
    .action(predictCommand);
  addConnectionOptions(command, ['redis', 'hdfs']);
}
