/**
 * A source in memory: messages pushed by the caller, outcomes, replies and dead letters kept
 * in arrays. For tests of the pipeline without servers, and a small example of what a source
 * must do (see Source).
 */
import { decodeEnvelope, encodeEnvelope } from '@inferq/shared';
import type { Envelope } from '@inferq/shared';
import type { ParquetSink } from '../../sinks/parquet-sink.js';
import type { RollJournal, RollRecord, Sink, SinkJob, SinkResult, WriteOutcome } from '../../sinks/sink.js';
import type { SinkSet } from '../../sinks/sink-set.js';
import type { Answered, DeadLetter, Delivery, Handler, Outcome, Source, SourceHealth } from '../source.js';

export interface MemoryMessage {
  /** The job id the source knows; the envelope must carry the same. */
  readonly id: string;
  readonly bytes: Uint8Array;
  /** Tries for retriable failures. Default 3. */
  readonly attempts?: number;
  /** When it was enqueued, epoch ms (queue-wait metrics). Default: when it is pushed. */
  readonly enqueuedAt?: number;
}

export interface MemorySourceOptions {
  /** Delivered again after a retry outcome at once (tests), or after the outcome's delay. Default true. */
  readonly retryAtOnce?: boolean;
}

/** Replies written, in order. */
class MemoryReplies implements Sink {
  readonly written: { job: SinkJob; result: SinkResult; envelope: Envelope }[] = [];
  readonly answeredRuns = new Set<string>();

  async write(job: SinkJob, result: SinkResult): Promise<WriteOutcome> {
    this.written.push({ job, result, envelope: decodeEnvelope(encodeReply(job, result)) });
    this.answeredRuns.add(job.run);
    return 'written';
  }

  async flush(): Promise<boolean> {
    return true;
  }
}

/** Roll records by run and job id, as Redis keeps them. */
export class MemoryJournal implements RollJournal {
  readonly records = new Map<string, RollRecord>();

  async written(job: SinkJob, targets: readonly { readonly key: string; readonly sink: ParquetSink }[], sinks: SinkSet): Promise<Set<string>> {
    const done = new Set<string>();
    const record = this.records.get(`${job.run}/${job.id}`);
    for (const t of targets) {
      const checked = record?.[t.key] === undefined ? undefined : await sinks.recordedFiles(t.key, record[t.key], job.id);
      if (checked !== undefined && (await Promise.all(checked.files.map((f) => checked.sink.location.store.exists(f)))).every(Boolean)) done.add(t.key);
    }
    return done;
  }

  async record(entries: readonly { readonly job: SinkJob; readonly files: RollRecord }[]): Promise<void> {
    for (const e of entries) this.records.set(`${e.job.run}/${e.job.id}`, e.files);
  }

  async forget(jobs: readonly SinkJob[]): Promise<void> {
    for (const j of jobs) this.records.delete(`${j.run}/${j.id}`);
  }
}

export class MemorySource implements Source {
  readonly name = 'memory';
  readonly concurrency = 256;
  readonly replies = new MemoryReplies();
  readonly journal = new MemoryJournal();
  readonly deadLetters: DeadLetter[] = [];
  private handler: Handler | undefined;
  private runs = 0;
  private readonly opts: MemorySourceOptions;

  constructor(options: MemorySourceOptions = {}) {
    this.opts = options;
  }

  async start(handler: Handler): Promise<void> {
    this.handler = handler;
  }

  async close(): Promise<void> {
    this.handler = undefined;
  }

  stats(): Record<string, number> {
    return { deadLetters: this.deadLetters.length, replies: this.replies.written.length };
  }

  /** Connected while started (there is no server to lose). */
  health(): SourceHealth {
    return this.handler === undefined ? { connected: false, reason: 'memory source not started' } : { connected: true };
  }

  /**
   * Hands a message to the pipeline until its outcome is settled (retries included); resolves
   * with the last outcome and every attempt's. `run` names a run delivered again (a crash).
   */
  async push(message: MemoryMessage, run?: string): Promise<{ outcome: Outcome; attempts: number }> {
    if (this.handler === undefined) throw new Error('MemorySource: start() it first');
    const id = run ?? `${message.id}:${this.runs++}`;
    const enqueuedAt = message.enqueuedAt ?? Date.now();
    for (let attempt = 1; ; attempt++) {
      const outcome = await this.handler(this.delivery(message, id, run !== undefined || attempt > 1, attempt, enqueuedAt));
      if (outcome.kind !== 'retry') return { outcome, attempts: attempt };
      if (this.opts.retryAtOnce === false) await new Promise((r) => setTimeout(r, outcome.delayMs));
    }
  }

  private delivery(message: MemoryMessage, run: string, rerun: boolean, attempt: number, enqueuedAt: number): Delivery {
    return {
      id: message.id,
      expectedId: message.id,
      run,
      rerun,
      attempt,
      maxAttempts: message.attempts ?? 3,
      position: undefined,
      enqueuedAt,
      hints: {},
      payload: async () => message.bytes,
      answered: async (): Promise<Answered> => (rerun && this.replies.answeredRuns.has(run) ? 'yes' : 'no'),
      deadLetter: async (letters) => {
        this.deadLetters.push(...letters);
      },
    };
  }
}

/** The reply envelope a transport would send, so tests read replies as callers do. */
function encodeReply(job: SinkJob, result: SinkResult): Uint8Array {
  return encodeEnvelope({ id: job.id, model: result.model, version: result.version, rowIds: job.rowIds, jobs: job.jobs }, result.outputs);
}
