/** A Redis queue worker: a RedisSource behind the one pipeline (WorkerService). */
import { WorkerService } from '../../service.js';
import type { WorkerServiceOptions } from '../../service.js';
import type { RedisSourceOptions } from './options.js';
import { RedisSource } from './source.js';

export interface RedisWorkerOptions extends RedisSourceOptions, Omit<WorkerServiceOptions, 'source' | 'logger'> {}

export class RedisWorker extends WorkerService {
  constructor(options: RedisWorkerOptions) {
    super({ ...options, source: new RedisSource(options) });
  }
}
