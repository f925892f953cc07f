/** `inferq predict`: Parquet in → model → Parquet out, no queue, no server. */
import { Option } from 'commander';
import type { Command } from 'commander';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix } from 'node:path';
import { InferqError } from '@inferq/shared';
import type { NonFinitePolicy } from '@inferq/shared';
import { createLogger } from '../../logging.js';
import { loadModel } from '../../models/loaded-model.js';
import { ModelRepository } from '../../models/repository.js';
import { predictParquet } from '../../predict/predict.js';
import { LocalStore, parseLocation } from '../../io/store.js';
import { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { formatDevice } from '../../runners/runner.js';
import { modelRepoDir, positiveInt } from '../flags.js';
import { guardOutput } from '../output-guard.js';
import { addConnectionOptions } from '../connections.js';
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
  progress: boolean;
  overwrite: boolean;
}

async function predictCommand(flags: PredictFlags): Promise<void> {
  // predict prints its own summary; its logs are warnings and errors unless INFERQ_LOG_LEVEL says otherwise.
  const logger = createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'predict' } });
  const device = parseDevice(flags.device);
  // A folder (trailing "/") gets part-00000.parquet and a _SUCCESS marker, as Spark and Hive
  // jobs write; HDFS outputs are written to a local temporary file first, then published.
  const dirMode = flags.output.endsWith('/');
  const target = parseLocation(dirMode ? `${flags.output}part-00000.parquet` : flags.output);
  const successPath = posix.join(posix.dirname(target.path), '_SUCCESS');
  await guardOutput({ input: flags.input, target, markers: dirMode ? [successPath] : [], overwrite: flags.overwrite });
  const repo = new ModelRepository(await modelRepoDir(flags.modelRepo));
  const model = await loadModel(repo, flags.model, flags.version, {
    device,
    logger,
    batching: { maxBatchSize: flags.maxBatch, maxDelayMs: flags.maxDelayMs },
    ...throughputThreads(flags, device),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => {
    logger.warn({ signal }, 'interrupted: stopping; no output will be written');
    abort.abort(new InferqError(`interrupted by ${signal}; no output written`));
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = new ProgressBar();
  const remote = !(target.store instanceof LocalStore);
  if (dirMode) await target.store.delete(successPath);
  const staging = remote ? await mkdtemp(join(tmpdir(), 'inferq-predict-')) : undefined;
  try {
    const summary = await predictParquet(model, {
      input: flags.input,
      output: staging === undefined ? target.path : join(staging, 'part.parquet'),
      nonFinite: flags.nan,
      signal: abort.signal,
      ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number }) => bar.update(p.rows, p.totalRows) } : {}),
    });
    bar.done();
    if (staging !== undefined) await target.store.putFile(summary.output, target.path);
    if (dirMode) await target.store.putBytes(successPath, new Uint8Array(0));
    process.stdout.write(
      `inferq predict: ${fmt(summary.rows)} rows in ${summary.seconds.toFixed(2)} s = ${fmt(summary.rowsPerSecond)} rows/s; ` +
        `${fmt(summary.batches)} batches, mean batch ${summary.meanBatchSize.toFixed(1)} rows; ` +
        `model ${model.name}:${model.version} on ${formatDevice(model.runner.device)} → ${remote ? target.uri : summary.output} (${fmt(summary.bytes)} bytes)\n`,
    );
  } finally {
    bar.done();
    if (staging !== undefined) await rm(staging, { recursive: true, force: true });
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await model.close();
  }
}

export function registerPredict(program: Command): void {
  const command = program
    .command('predict')
    .description('Predict a Parquet file offline (no queue, no server): Parquet in → model → Parquet out.')
    .requiredOption('--model-repo <dir>', 'model repository: <dir>/<name>/<version>/model.onnx (a local folder, or webhdfs:// / hdfs://, copied locally at start)')
    .requiredOption('--model <name>', 'model name')
    .option('--version <v>', 'model version (default: the newest its versionPolicy serves)')
    .requiredOption('--input <file.parquet>', 'input Parquet file; columns named like model inputs feed them')
    .requiredOption('--output <file.parquet|dir/>', 'output Parquet file, or a folder ending in "/" (part-00000.parquet + _SUCCESS); a local path, file://, webhdfs:// or hdfs:// URI; written under a temporary name, renamed on success')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--max-batch <n>', 'largest batch in rows (overrides config.yaml)', positiveInt)
    .option('--max-delay-ms <n>', 'longest wait for a batch to fill', Number)
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .addOption(new Option('--nan <policy>', 'NaN/Inf in float features').choices(['reject', 'pass']).default('reject'))
    .option('--overwrite', 'replace an existing output (default: an existing output is refused)', false)
    .option('--no-progress', 'no progress bar')
    .action(predictCommand);
  addConnectionOptions(command, ['hdfs']);
}
