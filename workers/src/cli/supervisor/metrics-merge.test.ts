import { Counter, Gauge, Histogram, Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { mergeExpositions } from './metrics-merge.js';

/** A child's exposition, as prom-client writes it. */
async function childText(device: string | undefined, jobs: number): Promise<string> {
  const registry = new Registry();
  if (device !== undefined) registry.setDefaultLabels({ device });
  const c = new Counter({ name: 'inferq_jobs_total', help: 'Jobs by outcome.', labelNames: ['model', 'outcome'], registers: [registry] });
  c.inc({ model: 'mlp', outcome: 'ok' }, jobs);
  const h = new Histogram({ name: 'inferq_batch_rows', help: 'Rows per batch.', labelNames: ['model'], buckets: [1, 64], registers: [registry] });
  h.observe({ model: 'mlp' }, 10);
  const g = new Gauge({ name: 'inferq_ready', help: 'Ready.', registers: [registry] });
  g.set(1);
  return registry.metrics();
}

function lines(text: string, prefix: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(prefix));
}

describe('merging the children /metrics', () => {
  it('one HELP and one TYPE per family, followed by every child series, told apart by device', async () => {
    const merged = mergeExpositions([
      { device: 'cuda:0', text: await childText('cuda:0', 3) },
      { device: 'cuda:1', text: await childText('cuda:1', 5) },
    ]);
    for (const family of ['inferq_jobs_total', 'inferq_batch_rows', 'inferq_ready']) {
      expect(lines(merged, `# HELP ${family} `)).toHaveLength(1);
      expect(lines(merged, `# TYPE ${family} `)).toHaveLength(1);
    }
    expect(lines(merged, '# TYPE inferq_batch_rows ')).toEqual(['# TYPE inferq_batch_rows histogram']);
    expect(lines(merged, 'inferq_jobs_total{')).toEqual(['inferq_jobs_total{model="mlp",outcome="ok",device="cuda:0"} 3', 'inferq_jobs_total{model="mlp",outcome="ok",device="cuda:1"} 5']);
    // A family's samples (histogram buckets, sum and count of both children) all come after its TYPE and before the next family.
    const all = merged.trimEnd().split('\n');
    const start = all.indexOf('# TYPE inferq_batch_rows histogram');
    const end = all.indexOf('# HELP inferq_ready Ready.');
    expect(all.slice(start + 1, end)).toEqual([
      'inferq_batch_rows_bucket{le="1",device="cuda:0",model="mlp"} 0',
      'inferq_batch_rows_bucket{le="64",device="cuda:0",model="mlp"} 1',
      'inferq_batch_rows_bucket{le="+Inf",device="cuda:0",model="mlp"} 1',
      'inferq_batch_rows_sum{device="cuda:0",model="mlp"} 10',
      'inferq_batch_rows_count{device="cuda:0",model="mlp"} 1',
      'inferq_batch_rows_bucket{le="1",device="cuda:1",model="mlp"} 0',
      'inferq_batch_rows_bucket{le="64",device="cuda:1",model="mlp"} 1',
      'inferq_batch_rows_bucket{le="+Inf",device="cuda:1",model="mlp"} 1',
      'inferq_batch_rows_sum{device="cuda:1",model="mlp"} 10',
      'inferq_batch_rows_count{device="cuda:1",model="mlp"} 1',
    ]);
    expect(merged.endsWith('\n')).toBe(true);
  });

  it("gives a series without a device label its child's device, so two children never write the same series", async () => {
    const merged = mergeExpositions([
      { device: 'cuda:0', text: await childText(undefined, 1) },
      { device: 'cuda:1', text: await childText(undefined, 2) },
    ]);
    expect(lines(merged, 'inferq_ready')).toEqual(['inferq_ready{device="cuda:0"} 1', 'inferq_ready{device="cuda:1"} 1']);
    expect(lines(merged, 'inferq_jobs_total{')).toEqual(['inferq_jobs_total{device="cuda:0",model="mlp",outcome="ok"} 1', 'inferq_jobs_total{device="cuda:1",model="mlp",outcome="ok"} 2']);
  });

  it('a missing child leaves only its series out; a family only one child has is kept', async () => {
    const one = mergeExpositions([{ device: 'cuda:1', text: await childText('cuda:1', 5) }]);
    expect(lines(one, 'inferq_jobs_total{')).toEqual(['inferq_jobs_total{model="mlp",outcome="ok",device="cuda:1"} 5']);
    const extra = '# HELP inferq_extra Only here.\n# TYPE inferq_extra gauge\ninferq_extra 7\n';
    const merged = mergeExpositions([
      { device: 'cuda:0', text: await childText('cuda:0', 1) },
      { device: 'cuda:1', text: extra },
    ]);
    expect(merged).toContain('# HELP inferq_extra Only here.\n# TYPE inferq_extra gauge\ninferq_extra{device="cuda:1"} 7\n');
    expect(mergeExpositions([])).toBe('');
  });

  it('keeps label values with braces, commas, quotes and timestamps intact; drops a series repeated and a family of a conflicting type', () => {
    const a = '# TYPE x gauge\nx{path="a,}b",q="say \\"hi\\""} 1 1700000000000\nx{path="a,}b",q="say \\"hi\\"",device="cuda:9"} 2\n';
    const b = '# TYPE x counter\nx{path="c"} 3\n# TYPE y gauge\ny{device="cuda:9"} 4\n';
    const c = '# TYPE y gauge\ny{device="cuda:9"} 5\nnot a sample line {\n';
    const merged = mergeExpositions([
      { device: 'cuda:0', text: a },
      { device: 'cuda:1', text: b },
      { device: 'cuda:2', text: c },
    ]);
    expect(merged).toBe(
      [
        '# TYPE x gauge',
        'x{device="cuda:0",path="a,}b",q="say \\"hi\\""} 1 1700000000000',
        'x{path="a,}b",q="say \\"hi\\"",device="cuda:9"} 2',
        '# TYPE y gauge',
        'y{device="cuda:9"} 4',
        '',
      ].join('\n'),
    );
  });
});
