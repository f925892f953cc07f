/** A Kafka topic worker: a KafkaSource behind the one pipeline (WorkerService). */
import { WorkerService } from '../../service.js';
import type { WorkerServiceOptions } from '../../service.js';
import type { KafkaSourceOptions } from './options.js';
import { KafkaSource } from './source.js';

export interface KafkaWorkerOptions extends KafkaSourceOptions, Omit<WorkerServiceOptions, 'source' | 'logger'> {}

export class KafkaWorker extends WorkerService {
  constructor(options: KafkaWorkerOptions) {
    super({ ...options, source: new KafkaSource(options) });
  }
}
