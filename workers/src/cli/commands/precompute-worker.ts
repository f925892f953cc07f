/** `inferq worker --role precompute`: the process that runs scheduled precompute jobs. */
import type { Logger } from '../../logging.js';
import { PrecomputeWorker } from '../../precompute/schedules.js';
import type { parseDevice } from '../../runners/device.js';
import { throughputThreads } from '../../runners/onnx.js';
import { formatDevice } from '../../runners/runner.js';
import type { WorkerFlags } from './worker.js';

/** `inferq worker --role precompute`: runs the precompute jobs of the schedules, one at a time. */
export async function precomputeWorker(flags: WorkerFlags, device: ReturnType<typeof parseDevice>, logger: Logger): Promise<void> {
  const worker = new PrecomputeWorker({
    redis: flags.redis,
    logger,
    model: { device, ...throughputThreads(flags, device) },
  });
  await new Promise<void>((resolve, reject) => {
    const onSignal = (): void => void worker.close(flags.shutdownTimeoutMs).then(resolve, reject);
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
    worker.start().then(() => process.stdout.write(`inferq worker: serving precompute schedules on ${formatDevice(device)} (pid ${process.pid})\n`), reject);
  });
}

