/**
 * A worker process's readiness, as /readyz reports it.
 *
 * ```
 *  starting ──(models loaded and warmed, source started)──► serving ──(SIGTERM)──► draining
 *                                                              │ ready while the source is connected;
 *                                                              │ "source unreachable" while it is not
 * ```
 *
 * Liveness is not here: /livez answers while the event loop runs.
 */
import type { SourceHealth } from '../sources/source.js';

export interface Readiness {
  readonly ready: boolean;
  /** "ready", or why not: "starting…", "draining", "source unreachable: …". */
  readonly reason: string;
}

export class Health {
  private phase: 'starting' | 'serving' | 'draining' = 'starting';
  private modelsWaited: string | undefined;
  private source: (() => SourceHealth) | undefined;

  /**
   * `models`: the models that must be loaded and warmed before the process is ready
   * (`--models`); none by default.
   */
  constructor(models: readonly string[] = []) {
    if (models.length > 0) this.modelsWaited = models.join(', ');
  }

  /** Every required model is loaded and warmed. */
  modelsReady(): void {
    this.modelsWaited = undefined;
  }

  /** The source started: ready from now on while `source` says it is connected. */
  serving(source?: () => SourceHealth): void {
    if (this.phase === 'draining') return;
    this.phase = 'serving';
    this.source = source;
  }

  /** Stopping (SIGTERM): never ready again. */
  draining(): void {
    this.phase = 'draining';
  }

  readiness(): Readiness {
    if (this.phase === 'draining') return { ready: false, reason: 'draining' };
    if (this.modelsWaited !== undefined) return { ready: false, reason: `starting: loading and warming ${this.modelsWaited}` };
    if (this.phase === 'starting') return { ready: false, reason: 'starting: connecting to the source' };
    const source = this.source?.() ?? { connected: true };
    if (!source.connected) return { ready: false, reason: `source unreachable${source.reason === undefined ? '' : `: ${source.reason}`}` };
    return { ready: true, reason: 'ready' };
  }
}
