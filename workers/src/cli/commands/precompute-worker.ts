/** `inferq worker --role precompute`: the process that runs scheduled precompute jobs and distributed offline tasks. */
import { ConfigError, DEFAULT_PREFIX } from '@inferq/shared';
import type { Logger } from '../../logging.js';
import { OfflineWorker } from '../../offline/worker.js';
import { PredictTasks } from '../../offline/predict-run.js';
import { startOps } from '../../ops/ops.js';
import { PrecomputeTasks } from '../../precompute/distributed.js';
import { PrecomputeWorker, workerTrust } from '../../precompute/schedules.js';
import type { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx/runner.js';
import { formatDevice } from '../../runners/runner.js';
import { redisClientOptions } from '../connections.js';
import { modelRepoDir } from '../flags.js';
import { serve } from '../serve.js';
import type { WorkerFlags } from './worker.js';

/**
 * `inferq worker --role precompute`: runs the precompute jobs of the schedules, one at a time,
 * and the tasks of distributed runs (`inferq precompute --distributed`) from the offline queue
 * (`--queue`, default inferq-offline), one at a time, loading models only from its --model-repo
 * and reading, writing and importing only what its --allow-specs / --allow-inputs /
 * --allow-outputs allow (jobs and run records come from Redis: untrusted).
 */
export async function precomputeWorker(flags: WorkerFlags, device: ReturnType<typeof parseDevice>, logger: Logger): Promise<void> {
  if (flags.modelRepo === undefined) throw new ConfigError('worker --role precompute: --model-repo is required (scheduled runs load models only from it)');
  const modelRepo = await modelRepoDir(flags.modelRepo);
  const redisOptions = redisClientOptions(flags, flags.redis);
  // Models load per scheduled run, so none is waited for: ready once the schedules queue is connected.
  const ops = await startOps({ httpPort: flags.httpPort, device: formatDevice(device), logger });
  const common = { allowSpecs: flags.allowSpecs, allowInputs: flags.allowInputs, allowOutputs: flags.allowOutputs };
  const model = { device, ...throughputThreads(flags, device) };
  const worker = new PrecomputeWorker({ redis: flags.redis, redisOptions, prefix: flags.prefix, modelRepo, ...common, logger, model });
  const trust = await workerTrust({ redis: flags.redis, modelRepo, ...common, logger, model });
  const offline = new OfflineWorker({
    redis: flags.redis,
    redisOptions,
    prefix: flags.prefix,
    queue: flags.queue,
    handlers: [new PrecomputeTasks({ trust, modelRepo, model, logger }), new PredictTasks({ prefix: flags.prefix ?? DEFAULT_PREFIX, inputs: trust.inputs, outputs: trust.outputs, modelRepo, model, logger })],
    lockDurationMs: flags.lockDurationMs,
    logger,
    metrics: ops.metrics,
  });
  await serve(
    {
      start: async () => {
        await worker.start();
        await offline.start();
        ops.serving(() => {
          const h = worker.health();
          return h.connected ? offline.health() : h;
        });
      },
      stop: async (timeoutMs) => {
        const deadline = Date.now() + timeoutMs;
        await Promise.all([worker.close(timeoutMs), offline.close(timeoutMs)]);
        await ops.close(Math.max(Date.now() + 200, deadline));
      },
      stats: () => ({}),
    },
    {
      logger,
      shutdownTimeoutMs: flags.shutdownTimeoutMs,
      servingLine: () =>
        `inferq worker: serving precompute schedules and offline tasks (queue ${flags.queue}) on ${formatDevice(device)} (pid ${process.pid})${ops.port === undefined ? '' : `; /livez /readyz /metrics on port ${ops.port}`}`,
      onStopping: () => ops.health.draining(),
    },
  );
}
