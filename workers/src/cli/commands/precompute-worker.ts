/** `inferq worker --role precompute`: the process that runs scheduled precompute jobs. */
import { ConfigError } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { PrecomputeWorker } from '../../precompute/schedules.js';
import type { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { formatDevice } from '../../runners/runner.js';
import { redisClientOptions } from '../connections.js';
import { modelRepoDir } from '../flags.js';
import { serve } from '../serve.js';
import type { WorkerFlags } from './worker.js';

/**
 * `inferq worker --role precompute`: runs the precompute jobs of the schedules, one at a time,
 * loading models only from its --model-repo and reading, writing and importing only what its
 * --allow-specs / --allow-inputs / --allow-outputs allow (the jobs come from Redis: untrusted).
 */
export async function precomputeWorker(flags: WorkerFlags, device: ReturnType<typeof parseDevice>, logger: Logger): Promise<void> {
  if (flags.modelRepo === undefined) throw new ConfigError('worker --role precompute: --model-repo is required (scheduled runs load models only from it)');
  const worker = new PrecomputeWorker({
    redis: flags.redis,
    redisOptions: redisClientOptions(flags, flags.redis),
    prefix: flags.prefix,
    modelRepo: await modelRepoDir(flags.modelRepo),
    allowSpecs: flags.allowSpecs,
    allowInputs: flags.allowInputs,
    allowOutputs: flags.allowOutputs,
    logger,
    model: { device, ...throughputThreads(flags, device) },
  });
  await serve(
    { start: () => worker.start(), stop: (timeoutMs) => worker.close(timeoutMs), stats: () => ({}) },
    { logger, shutdownTimeoutMs: flags.shutdownTimeoutMs, servingLine: () => `inferq worker: serving precompute schedules on ${formatDevice(device)} (pid ${process.pid})` },
  );
}
