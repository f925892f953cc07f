/**
 * A local copy of an HDFS Parquet file that holds only what one task reads: the leading magic,
 * the footer, and the byte ranges of its row groups, each written at its own offset in a sparse
 * file of the full size. A task over row groups [a, b) of a large file downloads those row groups,
 * not the file; planning downloads footers only.
 */
import { open } from 'node:fs/promises';
import { parseFileMeta } from '../io/parquet-format.js';
import type { FileMeta } from '../io/parquet-format.js';
import { planFile } from '../io/plan.js';
import { CorruptDataError } from '../io/thrift.js';
import type { WebHdfs } from '../io/webhdfs.js';

/** Bytes read from the end first: most footers fit, so one request gets the footer and its length. */
const TAIL_GUESS = 64 * 1024;

/**
 * Writes the sparse copy of `path` to `localPath` and returns true, or returns false (writing
 * nothing) when a column needs parquet-wasm, whose reader may look at more of the file than
 * the row groups (page indexes): the caller then copies the whole file.
 */
export async function sparseCopy(client: WebHdfs, path: string, localPath: string, rowGroups: readonly [number, number]): Promise<boolean> {
  const status = await client.getFileStatus(path);
  if (status === undefined) throw new CorruptDataError('no such file');
  const size = status.length;
  if (size < 12) throw new CorruptDataError(`not a Parquet file (${size} bytes, too short)`);
  const { meta, tail, tailStart, footerStart } = await readFooter(client, path, size);
  const plan = planFile(meta);
  if (plan.fast.size !== plan.names.length) return false;
  const handle = await open(localPath, 'w');
  try {
    await handle.truncate(size);
    await handle.write(Buffer.from('PAR1'), 0, 4, 0); // the tail's magic was checked: the head's is the same
    await handle.write(tail, footerStart - tailStart, size - footerStart, footerStart);
    for (let g = rowGroups[0]; g < Math.min(rowGroups[1], meta.rowGroups.length); g++) {
      const columns = meta.rowGroups[g]!.columns;
      if (columns.length === 0) continue;
      const start = Math.min(...columns.map((c) => c.start));
      const end = Math.max(...columns.map((c) => c.start + c.totalCompressedSize));
      if (start < 4 || end > footerStart || end <= start) throw new CorruptDataError(`row group ${g} spans bytes [${start}, ${end}) outside the data of a ${size}-byte file`);
      const bytes = await client.open(path, { offset: start, length: end - start });
      if (bytes.length !== end - start) throw new CorruptDataError(`row group ${g}: read ${bytes.length} bytes at ${start}, wanted ${end - start}`);
      await handle.write(bytes, 0, bytes.length, start);
    }
  } finally {
    await handle.close();
  }
  return true;
}

/** The footer's metadata and the file's last bytes that hold it (footer, its length, the magic). */
async function readFooter(client: WebHdfs, path: string, size: number): Promise<{ meta: FileMeta; tail: Buffer; tailStart: number; footerStart: number }> {
  let tailStart = Math.max(0, size - TAIL_GUESS);
  let tail = await client.open(path, { offset: tailStart, length: size - tailStart });
  const footerLength = tail.readUInt32LE(tail.length - 8);
  if (tail.readUInt32LE(tail.length - 4) !== 0x31524150) throw new CorruptDataError('truncated or not a Parquet file (no PAR1 at the end)');
  if (footerLength > size - 12) throw new CorruptDataError(`corrupt footer (length ${footerLength} exceeds the file size ${size})`);
  if (footerLength + 8 > tail.length) {
    tailStart = size - 8 - footerLength;
    tail = await client.open(path, { offset: tailStart, length: footerLength + 8 });
  }
  const footerStart = size - 8 - footerLength;
  const meta = parseFileMeta(tail.subarray(footerStart - tailStart, tail.length - 8), footerStart);
  return { meta, tail, tailStart, footerStart };
}
