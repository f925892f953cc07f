/** What one delivery tells the metrics: its model (once resolved), its queue wait and its end-to-end time. */
import type { JobObserver, WorkerMetrics } from '../ops/hooks.js';
import type { LoadedModel } from '../models/loaded-model.js';

export class JobTrack {
  /** The model the envelope resolved to; its name and version label the metrics (a job's own claim never does). */
  model: LoadedModel | undefined;
  private waited = false;

  constructor(
    private readonly metrics: WorkerMetrics,
    private readonly transport: string,
    /** Epoch ms, when the source knows it. */
    private readonly enqueuedAt: number | undefined,
  ) {}

  /** The observer of this delivery's (transport, model, version); model and version are "" before the model resolved. */
  observer(): JobObserver {
    return this.metrics.jobs(this.transport, this.model?.name ?? '', this.model?.version ?? '');
  }

  /** The batcher's onStart: the first batch holding the delivery's rows ends its queue wait (observed once per delivery). */
  readonly started = (): void => {
    if (this.waited) return;
    this.waited = true;
    const since = this.since();
    if (since !== undefined) this.observer().queueWait(since);
  };

  /** The delivery's outcome is written: its end-to-end time. */
  finished(obs: JobObserver): void {
    const since = this.since();
    if (since !== undefined) obs.finished(since);
  }

  /** Seconds since the job was enqueued (0 when the producer's clock is ahead). */
  private since(): number | undefined {
    const at = this.enqueuedAt;
    return at === undefined || !Number.isFinite(at) || at <= 0 ? undefined : Math.max(0, Date.now() - at) / 1000;
  }
}
