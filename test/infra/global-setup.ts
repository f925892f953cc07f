/**
 * Vitest global set-up: prepares what the suites need once per run.
 * Servers (Redis, Kafka, HDFS) are started by their own modules in test/infra.
 */
export default async function setup(): Promise<void> {
  // Nothing global yet.
}
