/**
 * Parquet in and out for `inferq predict` and the Parquet sinks, in Apache
 * Arrow record batches.
 *
 *   openParquet(path) ─► reader.batches({ batchSize, columns }) ─► RecordBatch …   (parquet-reader.ts)
 *   createParquetWriter(path) ─► write(batch) … ─► close(): fsync + rename      (parquet-writer.ts)
 *
 * Reading decodes the common columns (numbers, strings, list / fixed_size_list
 * of numbers; PLAIN or dictionary; uncompressed or Snappy) in JavaScript
 * straight into Arrow buffers — a list<float32> column arrives as one
 * contiguous Float32Array per batch, ready for the model without a copy — and
 * hands anything else to parquet-wasm in a worker thread. Writing goes through
 * parquet-wasm. Failures are DataIOErrors that name the file.
 */
export { DEFAULT_BATCH_SIZE, openParquet } from './parquet-reader.js';
export type { ParquetReader, ReadOptions } from './parquet-reader.js';
export { DEFAULT_ROW_GROUP_ROWS, createParquetWriter } from './parquet-writer.js';
export type { ParquetCompression, ParquetWriter, WriteResult, WriterOptions } from './parquet-writer.js';
export { listValues } from './list-values.js';
export type { ListValues, TypedArray } from './list-values.js';
