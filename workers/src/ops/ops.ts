/** What a long-running command starts for operations: its metrics, its readiness, the HTTP endpoints and the summary line. */
import type { Logger } from '../logging.js';
import type { SourceHealth } from '../sources/source.js';
import { Health } from './health.js';
import { PrometheusMetrics } from './metrics.js';
import { startOpsServer } from './server.js';
import { startSummary } from './summary.js';

export interface OpsOptions {
  /** `--http-port`: 0 = no endpoints. */
  readonly httpPort: number;
  /** Default "0.0.0.0". */
  readonly host?: string;
  /** The `device` label of every series. */
  readonly device: string;
  readonly logger: Logger;
  /** Models that must be loaded and warmed before /readyz answers 200 (`--models`). */
  readonly models?: readonly string[];
  /** `--log-summary-ms`: 0 = no summary line. Default 0. */
  readonly summaryMs?: number;
}

export interface Ops {
  readonly metrics: PrometheusMetrics;
  readonly health: Health;
  /** The endpoints' port; undefined when off. */
  readonly port: number | undefined;
  /** The source started: readiness follows `source` from now on, and the summary line starts. */
  serving(source: () => SourceHealth): void;
  /** Stops the summary and the endpoints by `deadline` (epoch ms). */
  close(deadline: number): Promise<void>;
}

/** Starts listening at once, so /readyz says "starting" while models load. */
export async function startOps(options: OpsOptions): Promise<Ops> {
  const metrics = new PrometheusMetrics({ device: options.device, logger: options.logger });
  const health = new Health(options.models);
  metrics.setReadiness(() => health.readiness().ready);
  const server = options.httpPort === 0 ? undefined : await startOpsServer({ port: options.httpPort, host: options.host ?? '0.0.0.0', health, metrics, logger: options.logger });
  let summary: { stop(): void } | undefined;
  return {
    metrics,
    health,
    port: server?.port,
    serving(source) {
      health.serving(source);
      summary ??= startSummary({ intervalMs: options.summaryMs ?? 0, totals: () => metrics.totals(), logger: options.logger });
    },
    async close(deadline) {
      summary?.stop();
      await server?.close(deadline);
    },
  };
}
