/**
 * Arrow → Parquet for the bundled example data: columns are built as Arrow vectors
 * (list columns as real List<Float32>), serialised to an IPC stream and written by
 * parquet-wasm (arrow-rs) with ZSTD compression.
 */
import { Field, Float32, List, makeData, makeVector, tableToIPC } from 'apache-arrow';
import type { Table, Vector } from 'apache-arrow';
import * as pq from 'parquet-wasm';

/** A list<float32> column: row r holds values[r*width … (r+1)*width). */
export function floatListColumn(values: Float32Array, width: number): Vector<List<Float32>> {
  if (width <= 0 || values.length % width !== 0) {
    throw new Error(`list column: ${values.length} values do not split into rows of ${width}`);
  }
  const rows = values.length / width;
  const child = makeData({ type: new Float32(), length: values.length, nullCount: 0, data: values });
  const valueOffsets = Int32Array.from({ length: rows + 1 }, (_, r) => r * width);
  // Same shape as pyarrow's pa.list_(pa.float32()): child field "item", nullable.
  const type = new List(new Field('item', new Float32(), true));
  return makeVector(makeData({ type, length: rows, nullCount: 0, valueOffsets, child }));
}

/** Encodes an Arrow table as a Snappy-compressed Parquet (the common default; inferq reads it on its fast path) file. */
export function toParquet(table: Table): Uint8Array {
  const wasmTable = pq.Table.fromIPCStream(tableToIPC(table, 'stream'));
  const props = new pq.WriterPropertiesBuilder()
    .setCompression(pq.Compression.SNAPPY)
    .setCreatedBy('inferq examples/build')
    .build();
  return pq.writeParquet(wasmTable, props);
}
