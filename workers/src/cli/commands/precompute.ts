/** `inferq precompute`: a whole feature space into a lookup table (Redis and/or Parquet). */
import { Option } from 'commander';
import type { Command } from 'commander';
import { InferqError } from '@inferq/shared';
import { createLogger } from '../../logging.js';
import { loadModel } from '../../models/loaded-model.js';
import { ModelRepository } from '../../models/repository.js';
import { precompute } from '../../precompute/precompute.js';
import type { PrecomputeTarget } from '../../precompute/precompute.js';
import { checkSpecFiles, loadSpec } from '../../precompute/spec.js';
import { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { defaultRedisUrl, modelRepoDir, positiveInt } from '../flags.js';
import { ProgressBar, fmt } from '../progress.js';
import { addConnectionOptions, redisClientOptions } from '../connections.js';
import type { ConnectionFlags } from '../connections.js';

interface PrecomputeFlags extends ConnectionFlags {
  spec: string;
  to: PrecomputeTarget;
  redis: string;
  modelRepo: string;
  device: string;
  threads?: number;
  instances?: number;
  lockTtlMs?: number;
  progress: boolean;
}

async function precomputeCommand(flags: PrecomputeFlags): Promise<void> {
  const logger = createLogger({ level: process.env['INFERQ_LOG_LEVEL'] ?? 'warn', base: { cmd: 'precompute' } });
  const spec = await loadSpec(flags.spec);
  // Files the spec names (and the featurizer's place beside it) are checked before the model loads.
  await checkSpecFiles(spec);
  const device = parseDevice(flags.device);
  const model = await loadModel(new ModelRepository(await modelRepoDir(flags.modelRepo)), spec.spec.model, spec.spec.version, {
    device,
    logger,
    ...throughputThreads(flags, device),
  });
  const abort = new AbortController();
  const onSignal = (signal: NodeJS.Signals): void => abort.abort(new InferqError(`interrupted by ${signal}; the run is resumable`));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const bar = new ProgressBar();
  try {
    const s = await precompute({
      spec,
      model,
      to: flags.to,
      redis: flags.redis,
      redisOptions: redisClientOptions(flags, flags.redis),
      logger,
      signal: abort.signal,
      ...(flags.lockTtlMs === undefined ? {} : { lockTtlMs: flags.lockTtlMs }),
      ...(flags.progress ? { onProgress: (p: { rows: number; totalRows: number; startRows: number }) => bar.update(p.rows, p.totalRows, p.startRows) } : {}),
    });
    bar.done();
    process.stdout.write(
      `inferq precompute: table ${s.table} run ${s.runId}: ${fmt(s.rows)} rows in ${s.seconds.toFixed(2)} s = ${fmt(s.rowsPerSecond)} rows/s` +
        `${s.resumedChunks > 0 ? ` (resumed: ${s.resumedChunks} of ${s.chunks} chunks were already done)` : ''}; ` +
        `${fmt(s.totalRows)} rows in the table` +
        `${s.buckets === undefined ? '' : `; redis: current → ${s.runId} (${fmt(s.buckets)} buckets)`}${s.parquet === undefined ? '' : `; parquet: ${s.parquet}`}\n`,
    );
  } finally {
    bar.done();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await model.close();
  }
}

export function registerPrecompute(program: Command): void {
  const command = program
    .command('precompute')
    .description('Predict a whole feature space offline into a lookup table (Redis and/or Parquet); resumable.')
    .requiredOption('--spec <spec.yaml>', 'the table, model, feature space, key template and encoding')
    .addOption(new Option('--to <target>', 'where the table goes').choices(['redis', 'parquet', 'both']).default('redis'))
    .option('--redis <url>', 'Redis URL', defaultRedisUrl())
    .requiredOption('--model-repo <dir>', 'model repository (a local folder, or webhdfs:// / hdfs://)')
    .option('--device <device>', 'cpu or cuda:N', 'cpu')
    .option('--threads <n>', 'ONNX Runtime intra-op threads per instance (default 1, with one instance per CPU)', positiveInt)
    .option('--instances <n>', 'sessions of the model, each in its own thread, batches spread over them (default: one per CPU)', positiveInt)
    .option('--lock-ttl-ms <n>', 'lifetime of the table lock (renewed while the run lives); a crashed run blocks the next this long', positiveInt)
    .option('--no-progress', 'no progress bar')
    .action(precomputeCommand);
  addConnectionOptions(command, ['redis', 'hdfs']);
}
