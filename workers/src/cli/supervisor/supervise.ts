/** `inferq worker --devices …`: one child worker per device (placeholder until implemented). */
import { ConfigError } from '@inferq/shared';
import type { WorkerFlags } from '../commands/worker.js';

export function superviseDevices(flags: WorkerFlags): Promise<void> {
  return Promise.reject(new ConfigError(`--devices ${flags.devices ?? ''}: not implemented yet`));
}
