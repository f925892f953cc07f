/**
 * The Parquet sink alone, to local disk and to a real HDFS (MiniDFSCluster over WebHDFS,
 * test/infra): rows/s for (job id, row, score) rows and for a 20-output multi-label model,
 * 1,000-row jobs, rolls of 100,000 rows (Parquet encode, local temp file, publish). The
 * medium MLP's raw ONNX Runtime rate, measured here too, is the bar: a sink slower than
 * it would be the bottleneck of that pipeline.
 *
 *   node --conditions=inferq-source --import tsx bench/sink.ts     (or the end of `npm run bench`)
 */
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { buildMlp, randomMlp } from '../examples/build/onnx-builder.js';
import { startHdfs } from '../test/infra/hdfs.js';
import type { HdfsServer } from '../test/infra/hdfs.js';
import { silentLogger } from '../workers/src/logging.js';
import { ParquetSink } from '../workers/src/sinks/parquet-sink.js';
import type { SinkRecord } from '../workers/src/sinks/parquet-sink.js';
import { QUICK, fmt, rawOrt, table } from './common.js';
import { killAll, onSignal, unwatchServer, watchServer } from './processes.js';

const JOB_ROWS = 1000;
const ROLL_ROWS = 100_000;
const ROWS = QUICK ? 200_000 : 1_000_000;

function record(seq: number, width: number): SinkRecord {
  const data = new Float32Array(JOB_ROWS * width);
  for (let i = 0; i < data.length; i++) data[i] = Math.sin(seq + i);
  return { seq, jobId: `job-${seq}`, rowIds: undefined, rows: JOB_ROWS, model: 'm', version: '1', ts: Date.now(), outputs: { score: { dtype: 'float32', shape: width === 1 ? [JOB_ROWS, 1] : [JOB_ROWS, width], data } } };
}

async function run(location: string, width: number): Promise<number> {
  const sink = new ParquetSink({ location, logger: silentLogger(), rollRows: ROLL_ROWS });
  const records = Array.from({ length: ROLL_ROWS / JOB_ROWS }, (_, i) => record(i, width));
  const start = performance.now();
  let seq = 0;
  for (let rows = 0; rows < ROWS; rows += ROLL_ROWS) {
    const first = seq;
    for (const r of records) sink.add('bench', { ...r, seq: seq++ });
    await sink.roll('bench', first, seq - 1);
  }
  return ROWS / ((performance.now() - start) / 1000);
}

export async function sinkBench(): Promise<void> {
  console.log(`\ninferq sink bench — Parquet sink, ${fmt(ROWS)} rows in 1,000-row jobs, rolls of ${fmt(ROLL_ROWS)} rows${QUICK ? ' (quick)' : ''}`);
  const medium = await rawOrt(buildMlp(randomMlp([256, 1024, 1024, 512, 1], 11)), 256, [1024]);
  const bar = medium.get(1024)!;
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-sink-'));
  process.once('exit', killAll);
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  let hdfs: HdfsServer | undefined;
  try {
    hdfs = await startHdfs();
    const pid = hdfs.pid();
    if (pid !== undefined) watchServer(pid);
    const host = hdfs.url.replace(/^http:\/\//, '');
    const rows: (string | number)[][] = [];
    for (const [label, width] of [
      ['(id, score)', 1],
      ['20-output multi-label', 20],
    ] as const) {
      const local = await run(join(dir, `local-${width}`), width);
      const remote = await run(`webhdfs://${host}/bench-${width}`, width);
      rows.push([label, local, remote, `${(Math.min(local, remote) / bar).toFixed(1)}×`]);
    }
    table(`Parquet sink rows/s (medium MLP raw ONNX Runtime at batch 1,024: ${fmt(bar)} rows/s)`, ['rows', 'local disk', 'HDFS (WebHDFS)', 'slower of the two vs medium raw'], rows);
  } finally {
    const pid = hdfs?.pid();
    await hdfs?.destroy();
    if (pid !== undefined) unwatchServer(pid);
    process.off('exit', killAll);
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await rm(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] !== undefined && import.meta.url === pathToFileURL(process.argv[1]).href) await sinkBench();
