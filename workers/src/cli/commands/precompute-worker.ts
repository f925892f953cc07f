/** `inferq worker --role precompute`: the process that runs scheduled precompute jobs. */
import { ConfigError } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { startOps } from '../../ops/ops.js';
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
  const modelRepo = await modelRepoDir(flags.modelRepo);
  const redisOptions = redisClientOptions(flags, flags.redis);
  // Models load per scheduled run, so none is waited for: ready once the schedules queue is connected.
  const ops = await startOps({ httpPort: flags.httpPort, device: formatDevice(device), logger });
  const worker = new PrecomputeWorker({
    redis: flags.redis,
    redisOptions,
    prefix: flags.prefix,
    modelRepo,
    allowSpecs: flags.allowSpecs,
    allowInputs: flags.allowInputs,
    allowOutputs: flags.allowOutputs,
    logger,
    model: { device, ...throughputThreads(flags, device) },
  });
  await serve(
    {
      start: async () => {
        await worker.start();
        ops.serving(() => worker.health());
      },
      stop: async (timeoutMs) => {
        const deadline = Date.now() + timeoutMs;
        await worker.close(timeoutMs);
        await ops.close(Math.max(Date.now() + 200, deadline));
      },
      stats: () => ({}),
    },
    {
      logger,
      shutdownTimeoutMs: flags.shutdownTimeoutMs,
      servingLine: () => `inferq worker: serving precompute schedules on ${formatDevice(device)} (pid ${process.pid})${ops.port === undefined ? '' : `; /livez /readyz /metrics on port ${ops.port}`}`,
      onStopping: () => ops.health.draining(),
    },
  );
}
