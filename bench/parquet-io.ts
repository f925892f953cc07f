/**
 * Parquet I/O for `inferq predict`, measured: which library reads a
 * list<float32>[64] feature column and writes id + score fastest.
 *
 *   node --conditions=inferq-source --import tsx bench/parquet-io.ts
 *
 * Compares, on the same files:
 *   read  1M × (id utf8, features list<float32>[64]) : inferq reader (JS decoder) | parquet-wasm stream + Arrow IPC | hyparquet
 *   write 1M × (id utf8, score float32)               : inferq writer (parquet-wasm, streaming) | parquet-wasm writeParquet | hyparquet-writer
 *   write 1M × (id, features) (passthrough-sized)     : inferq writer | hyparquet-writer
 *
 * hyparquet and hyparquet-writer are not dependencies: install them outside the
 * repo (`npm install --no-save hyparquet hyparquet-writer` in $PQCMP_DIR,
 * default /tmp/pqcmp) to include them; otherwise their rows say "not installed".
 * Env: BENCH_ROWS (default 1,000,000).
 */
import { openAsBlob } from 'node:fs';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import type { Data } from 'apache-arrow';
import { Field, Float32, List, RecordBatch, RecordBatchReader, RecordBatchStreamWriter, Schema, Struct, Utf8, makeData } from 'apache-arrow';
import type * as ParquetWasm from 'parquet-wasm/node';
import { createParquetWriter, openParquet } from '../workers/src/io/parquet.js';

const ROWS = Number(process.env['BENCH_ROWS'] ?? 1_000_000);
const WIDTH = 64;
const BATCH = 65_536;
const PQCMP_DIR = process.env['PQCMP_DIR'] ?? '/tmp/pqcmp';

const pw = createRequire(import.meta.url)('parquet-wasm/node') as typeof ParquetWasm;

// ---- data ----------------------------------------------------------------------------------

function ids(from: number, n: number): Data<Utf8> {
  const enc = new TextEncoder();
  const parts = Array.from({ length: n }, (_, i) => enc.encode(`row-${from + i}`));
  const offsets = new Int32Array(n + 1);
  parts.forEach((p, i) => (offsets[i + 1] = (offsets[i] as number) + p.length));
  const data = new Uint8Array(offsets[n] as number);
  parts.forEach((p, i) => data.set(p, offsets[i]));
  return makeData({ type: new Utf8(), length: n, valueOffsets: offsets, data });
}

let seed = 12345;
function random(): number {
  seed = (Math.imul(seed, 1103515245) + 12345) >>> 0;
  return seed / 4294967296;
}

function features(n: number): Data<List<Float32>> {
  const values = new Float32Array(n * WIDTH);
  for (let i = 0; i < values.length; i++) values[i] = random();
  const offsets = new Int32Array(n + 1);
  for (let i = 0; i <= n; i++) offsets[i] = i * WIDTH;
  const child = makeData({ type: new Float32(), length: values.length, data: values });
  return makeData({ type: new List(new Field('item', new Float32(), true)), length: n, valueOffsets: offsets, child });
}

function batchOf(columns: Record<string, Data>): RecordBatch {
  const fields = Object.entries(columns).map(([name, d]) => new Field(name, d.type, true));
  const length = Object.values(columns)[0]?.length ?? 0;
  return new RecordBatch(new Schema(fields), makeData({ type: new Struct(fields), length, nullCount: 0, children: Object.values(columns) }));
}

function featureBatches(): RecordBatch[] {
  const out: RecordBatch[] = [];
  for (let from = 0; from < ROWS; from += BATCH) {
    const n = Math.min(BATCH, ROWS - from);
    out.push(batchOf({ id: ids(from, n), features: features(n) }));
  }
  return out;
}

function scoreBatches(): RecordBatch[] {
  const out: RecordBatch[] = [];
  for (let from = 0; from < ROWS; from += BATCH) {
    const n = Math.min(BATCH, ROWS - from);
    const scores = Float32Array.from({ length: n }, () => random());
    out.push(batchOf({ id: ids(from, n), score: makeData({ type: new Float32(), length: n, data: scores }) }));
  }
  return out;
}

// ---- measurement ---------------------------------------------------------------------------

interface Row {
  readonly task: string;
  readonly library: string;
  readonly seconds: number | undefined;
  readonly note: string;
}
const results: Row[] = [];

async function measure(task: string, library: string, fn: () => Promise<string | void>): Promise<void> {
  const rssBefore = process.memoryUsage().rss;
  let peak = rssBefore;
  const timer = setInterval(() => (peak = Math.max(peak, process.memoryUsage().rss)), 20);
  const t0 = performance.now();
  try {
    const note = (await fn()) ?? '';
    const seconds = (performance.now() - t0) / 1000;
    results.push({ task, library, seconds, note: `${note}${note ? '; ' : ''}peak RSS +${((peak - rssBefore) / 2 ** 20).toFixed(0)} MiB` });
  } catch (err) {
    results.push({ task, library, seconds: undefined, note: err instanceof Error ? err.message.split('\n')[0] ?? '' : String(err) });
  } finally {
    clearInterval(timer);
  }
  const r = results[results.length - 1] as Row;
  console.log(`  ${task} | ${library}: ${r.seconds === undefined ? 'failed' : `${r.seconds.toFixed(2)} s`} ${r.note}`);
}

/** hyparquet / hyparquet-writer from PQCMP_DIR, if installed there. */
async function optional<T>(name: string, entry: string): Promise<T | undefined> {
  const file = join(PQCMP_DIR, 'node_modules', name, entry);
  try {
    await stat(file);
  } catch {
    return undefined;
  }
  return (await import(pathToFileURL(file).href)) as T;
}

interface Hyparquet {
  asyncBufferFromFile(path: string): Promise<unknown>;
  parquetMetadataAsync(file: unknown): Promise<{ row_groups: { num_rows: bigint }[] }>;
  parquetRead(options: {
    file: unknown;
    metadata: unknown;
    rowStart: number;
    rowEnd: number;
    columns?: string[];
    onChunk: (chunk: { columnName: string; columnData: ArrayLike<unknown>; rowStart: number; rowEnd: number }) => void;
  }): Promise<void>;
}
interface HyparquetWriter {
  parquetWriteBuffer(options: {
    columnData: { name: string; data: unknown; type?: string }[];
    schema?: Record<string, unknown>[];
    rowGroupSize?: number;
  }): ArrayBuffer;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'inferq-bench-pq-'));
  try {
    const hyparquet = await optional<Hyparquet>('hyparquet', 'src/node.js');
    const hyparquetWriter = await optional<HyparquetWriter>('hyparquet-writer', 'src/index.js');
    console.log(`Parquet I/O, ${ROWS.toLocaleString('en')} rows, node ${process.version}`);

    // ---- write id + features (the input file) ----
    let batches = featureBatches();
    const input = join(dir, 'features.parquet');
    await measure('write id+features', 'inferq writer (parquet-wasm stream)', async () => {
      const w = await createParquetWriter(input, { compression: 'snappy' });
      for (const b of batches) await w.write(b);
      const r = await w.close();
      return `${(r.bytes / 2 ** 20).toFixed(0)} MiB`;
    });
    if (hyparquetWriter !== undefined) {
      await measure('write id+features', 'hyparquet-writer', async () => {
        const idsAll: string[] = [];
        const rows: number[][] = [];
        for (const b of batches) {
          const idv = b.getChild('id');
          const fv = b.getChild('features');
          for (let i = 0; i < b.numRows; i++) {
            idsAll.push(idv?.get(i) as string);
            rows.push(Array.from((fv?.get(i) as { toArray(): Float32Array }).toArray()));
          }
        }
        const buf = hyparquetWriter.parquetWriteBuffer({
          columnData: [
            { name: 'id', data: idsAll },
            { name: 'features', data: rows },
          ],
          schema: [
            { name: 'root', num_children: 2 },
            { name: 'id', type: 'BYTE_ARRAY', converted_type: 'UTF8', repetition_type: 'OPTIONAL' },
            { name: 'features', repetition_type: 'OPTIONAL', num_children: 1, converted_type: 'LIST' },
            { name: 'list', repetition_type: 'REPEATED', num_children: 1 },
            { name: 'element', type: 'FLOAT', repetition_type: 'OPTIONAL' },
          ],
          rowGroupSize: 131_072,
        });
        await writeFile(join(dir, 'features-hyparquet.parquet'), new Uint8Array(buf));
        return `${(buf.byteLength / 2 ** 20).toFixed(0)} MiB, whole file in memory`;
      });
    }
    batches = [];

    // ---- read id + features ----
    const check = (b: RecordBatch): number => {
      const values = b.getChild('features')?.data[0]?.children[0]?.values as unknown;
      if (!(values instanceof Float32Array) || values.length !== b.numRows * WIDTH) throw new Error('features not one contiguous Float32Array');
      return b.numRows;
    };
    await measure('read id+features', 'inferq reader (JS decoder)', async () => {
      const reader = await openParquet(input);
      let n = 0;
      for await (const b of reader.batches({ batchSize: BATCH })) n += check(b);
      await reader.close();
      if (n !== ROWS) throw new Error(`read ${n} rows`);
      return 'contiguous Float32Array per batch';
    });
    await measure('read id+features', 'parquet-wasm stream + IPC', async () => {
      const file = await pw.ParquetFile.fromFile(await openAsBlob(input));
      let n = 0;
      for await (const wb of (await file.stream({ batchSize: BATCH })) as unknown as AsyncIterable<ParquetWasm.RecordBatch>) {
        for (const b of RecordBatchReader.from(wb.intoIPCStream())) n += check(b);
      }
      if (n !== ROWS) throw new Error(`read ${n} rows`);
      return 'main thread; wasm heap grows and is never returned';
    });
    if (hyparquet !== undefined) {
      await measure('read id+features', 'hyparquet', async () => {
        const file = await hyparquet.asyncBufferFromFile(input);
        const metadata = await hyparquet.parquetMetadataAsync(file);
        let n = 0;
        let start = 0;
        for (const rg of metadata.row_groups) {
          const rows = Number(rg.num_rows);
          await hyparquet.parquetRead({
            file,
            metadata,
            rowStart: start,
            rowEnd: start + rows,
            onChunk: (c) => {
              if (c.columnName !== 'features') return;
              // what the model needs: one contiguous Float32Array
              const flat = new Float32Array(c.columnData.length * WIDTH);
              for (let i = 0; i < c.columnData.length; i++) flat.set(c.columnData[i] as ArrayLike<number>, i * WIDTH);
              n += c.columnData.length;
            },
          });
          start += rows;
        }
        if (n !== ROWS) throw new Error(`read ${n} rows`);
        return 'rows as JS arrays, copied to a Float32Array';
      });
    }

    // ---- write id + score (the output file) ----
    const scores = scoreBatches();
    await measure('write id+score', 'inferq writer (parquet-wasm stream)', async () => {
      const w = await createParquetWriter(join(dir, 'scores.parquet'), { compression: 'snappy' });
      for (const b of scores) await w.write(b);
      const r = await w.close();
      return `${(r.bytes / 2 ** 20).toFixed(1)} MiB, fsync + rename included`;
    });
    await measure('write id+score', 'parquet-wasm writeParquet (one shot)', async () => {
      const ipc = RecordBatchStreamWriter.writeAll(scores).toUint8Array(true);
      const props = new pw.WriterPropertiesBuilder().setCompression(pw.Compression.SNAPPY).build();
      const bytes = pw.writeParquet(pw.Table.fromIPCStream(ipc), props);
      await writeFile(join(dir, 'scores-oneshot.parquet'), bytes);
      return `${(bytes.length / 2 ** 20).toFixed(1)} MiB, default properties (dictionary on)`;
    });
    if (hyparquetWriter !== undefined) {
      await measure('write id+score', 'hyparquet-writer', async () => {
        const idsAll: string[] = [];
        const scoreAll = new Float32Array(ROWS);
        let at = 0;
        for (const b of scores) {
          const idv = b.getChild('id');
          for (let i = 0; i < b.numRows; i++) idsAll.push(idv?.get(i) as string);
          scoreAll.set(b.getChild('score')?.data[0]?.values as Float32Array, at);
          at += b.numRows;
        }
        const buf = hyparquetWriter.parquetWriteBuffer({
          columnData: [
            { name: 'id', data: idsAll, type: 'STRING' },
            { name: 'score', data: scoreAll, type: 'FLOAT' },
          ],
          rowGroupSize: 131_072,
        });
        await writeFile(join(dir, 'scores-hyparquet.parquet'), new Uint8Array(buf));
        return `${(buf.byteLength / 2 ** 20).toFixed(1)} MiB, whole file in memory`;
      });
    }

    console.log('\n| task | library | seconds | rows/s | notes |\n|---|---|---:|---:|---|');
    for (const r of results) {
      const rate = r.seconds === undefined ? 'failed' : Math.round(ROWS / r.seconds).toLocaleString('en');
      console.log(`| ${r.task} | ${r.library} | ${r.seconds === undefined ? '–' : r.seconds.toFixed(2)} | ${rate} | ${r.note} |`);
    }
    if (hyparquet === undefined || hyparquetWriter === undefined) console.log(`\n(hyparquet / hyparquet-writer not installed in ${PQCMP_DIR}: skipped)`);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
