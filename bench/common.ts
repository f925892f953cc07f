/** What every benchmark shares: the raw ONNX Runtime reference and the table printer. */
import * as ort from 'onnxruntime-node';

export const QUICK = process.env['BENCH_QUICK'] === '1';
export const BATCH_SIZES = [1, 4, 16, 64, 256, 1024, 4096];
const SECONDS_PER_POINT = QUICK ? 0.2 : 0.7;

export const fmt = (n: number): string => Math.round(n).toLocaleString('en-US');

export function table(title: string, head: string[], rows: (string | number)[][]): void {
  const cells = [head, ...rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))];
  const widths = head.map((_, i) => Math.max(...cells.map((r) => String(r[i]).length)));
  console.log(`\n${title}`);
  for (const [k, r] of cells.entries()) {
    console.log(`  ${r.map((c, i) => (i === 0 ? String(c).padEnd(widths[i]!) : String(c).padStart(widths[i]!))).join('  ')}`);
    if (k === 0) console.log(`  ${widths.map((w) => '-'.repeat(w)).join('  ')}`);
  }
}

/**
 * Raw onnxruntime-node, the reference every ratio is taken against: its default session
 * options, one run at a time, rows/s per batch size.
 */
export async function rawOrt(model: Uint8Array, width: number, batchSizes: readonly number[] = BATCH_SIZES): Promise<Map<number, number>> {
  const session = await ort.InferenceSession.create(model, { executionProviders: ['cpu'], graphOptimizationLevel: 'all' });
  const result = new Map<number, number>();
  for (const batch of batchSizes) {
    const x = new ort.Tensor('float32', Float32Array.from({ length: batch * width }, (_, i) => Math.sin(i)), [batch, width]);
    for (let i = 0; i < 3; i++) await session.run({ features: x });
    let rows = 0;
    const start = performance.now();
    while (performance.now() - start < SECONDS_PER_POINT * 1000) {
      await session.run({ features: x });
      rows += batch;
    }
    result.set(batch, rows / ((performance.now() - start) / 1000));
  }
  await session.release();
  return result;
}
