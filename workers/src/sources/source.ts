/**
 * A source of jobs: a queue (Redis/BullMQ), a topic (Kafka), or anything else that can hand
 * over messages one by one and be told what became of each.
 *
 * ```
 *  source ── Delivery ──► handler (the pipeline) ──► Outcome ──► source
 *                             │ replies: source.replies (a Sink)          done      → acknowledge
 *                             │ dead letters: delivery.deadLetter()       retry     → deliver again later
 *                             │ Parquet rows: the roll coordinator        failed    → acknowledge (its dead letter is written)
 *                             ▼                                           handBack  → never acknowledge (delivered again)
 * ```
 *
 * A source bounds the work in flight (its `concurrency`: jobs handed over and not yet
 * settled), acknowledges only what its outcome says, and closes within one deadline.
 */
import type { Envelope, ErrorCode } from '@inferq/shared';
import type { RollJournal, RollPosition, Sink } from '../sinks/sink.js';
import type { SinkSet } from '../sinks/sink-set.js';

/**
 * What a source knows of an earlier answer to this run: 'yes' (its reply went out), 'maybe'
 * (some worker may have started it before a crash), 'no' (a first run).
 */
export type Answered = 'yes' | 'maybe' | 'no';

/** One message handed to the pipeline. */
export interface Delivery {
  /** The job id the source knows, for messages before the envelope is decoded. */
  readonly id: string;
  /** When set, the envelope's id must equal it (Redis: the BullMQ job id; Kafka: the id header). */
  readonly expectedId: string | undefined;
  /** This run of the job (for the roll journal). */
  readonly run: string;
  /** Whether this run may have been started before (retried, stalled, redelivered). */
  readonly rerun: boolean;
  /** This attempt, from 1, and how many a retriable failure gets in all. */
  readonly attempt: number;
  readonly maxAttempts: number;
  /** Where the source fixes the order of rows in Parquet rolls (Kafka: partition and offset). */
  readonly position: RollPosition | undefined;
  /** When the job was enqueued, epoch ms (Redis: the BullMQ job's timestamp; Kafka: the message's), for queue-wait and latency metrics. */
  readonly enqueuedAt?: number | undefined;
  /** What the source says before the envelope is read (for dead letters of unreadable messages). */
  readonly hints: { readonly model?: string | undefined; readonly version?: string | undefined; readonly replyTo?: string | undefined };
  /** The envelope's bytes. Throws InvalidInputError (a code saying why) for a message that is not ours, too large, or gone. */
  payload(): Promise<Uint8Array>;
  answered(): Promise<Answered>;
  /** Writes dead letters (with error replies where `reply` says), durably. */
  deadLetter(letters: readonly DeadLetter[]): Promise<void>;
  /** Source-specific checks of the decoded envelope (Redis: a pack's job count); throws InvalidInputError. */
  check?(envelope: Envelope): void;
  /** Called once the job's Parquet rows are buffered (or it has none): a source that fixes the order may roll past it. */
  rowsBuffered?(): void;
}

/** A job that failed for good, as the dead-letter stream or topic records it. */
export interface DeadLetter {
  /** The failed job's id (a packed job's own). */
  readonly id: string;
  readonly code: ErrorCode;
  readonly reason: string;
  readonly retriable: boolean;
  /** The error's class, for people (the code is what programs match). */
  readonly kind: string;
  readonly model: string;
  readonly version: string;
  readonly attempts: number;
  /** Also answer the caller with an error reply (not when an ok reply already went out). */
  readonly reply: boolean;
  readonly replyTo: string | undefined;
}

/** What became of a delivery. */
export type Outcome =
  | { readonly kind: 'done'; readonly rows: number }
  | { readonly kind: 'retry'; readonly err: unknown; readonly delayMs: number }
  | { readonly kind: 'failed'; readonly err: unknown }
  | { readonly kind: 'handBack'; readonly err: unknown };

export type Handler = (delivery: Delivery) => Promise<Outcome>;

/** Whether a source can take work now (readiness); `reason` says why not, for people. */
export interface SourceHealth {
  readonly connected: boolean;
  readonly reason?: string | undefined;
}

/** How much work waits at the source, read from its server (metrics). */
export type SourceDepth =
  | {
      readonly kind: 'queue';
      readonly transport: string;
      readonly queue: string;
      /** Jobs by state (BullMQ's state names). */
      readonly jobs: Readonly<Record<string, number>>;
      readonly deadLetters: number;
    }
  | {
      readonly kind: 'topic';
      readonly transport: string;
      readonly topic: string;
      readonly group: string;
      /** The group's lag per partition: messages not yet committed. */
      readonly partitions: readonly { readonly partition: number; readonly lag: number }[];
      /** Messages kept in the dead-letter topic. */
      readonly deadLetters: number;
    };

export interface Source {
  /** 'redis', 'kafka', …: the transport label of logs and metrics. */
  readonly name: string;
  /** Jobs in flight at once (`--concurrency`): a roll starts when as many wait for one. */
  readonly concurrency: number;
  /** Where this source's replies go (a reply stream, a reply topic). */
  readonly replies: Sink;
  /** How this source remembers Parquet rolls. */
  readonly journal: RollJournal;
  /** Connects and starts handing deliveries to `handler`; rejects when it cannot (ConnectionError, ConfigError). */
  start(handler: Handler): Promise<void>;
  /**
   * Stops taking messages and waits for the deliveries in flight until `deadline` (epoch ms),
   * then gives back what is unfinished (never acknowledged) and closes its connections.
   * Resolves by the deadline whatever is down.
   */
  close(deadline: number): Promise<void>;
  /** Counters for logs. */
  stats(): Record<string, number>;
  /** Whether the source is connected now (no I/O). A source without it counts as connected once started. */
  health?(): SourceHealth;
  /** Reads the queue depth from the server; undefined while the source is not running. May be slow: callers bound the wait. */
  depth?(): Promise<SourceDepth | undefined>;
  /** Set by the worker: called when sink groups go to another worker (Kafka partitions revoked); their buffered rows are dropped. */
  onRevoked?: ((groups: readonly string[]) => void) | undefined;
  /** Set by the worker: its sinks (a source may skip messages whose rows they already hold). */
  sinks?: SinkSet | undefined;
}
