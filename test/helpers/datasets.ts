/** Reads a sink's Parquet dataset (Hive folders) with pyarrow: an independent check of what the workers wrote. */
import { existsSync } from 'node:fs';
import { runPython } from '../infra/python.js';

const READ = `
import json, sys, glob, os
import pyarrow.dataset as ds
root = sys.argv[1]
files = sorted(glob.glob(os.path.join(root, '**', '*.parquet'), recursive=True))
files = [f for f in files if '_temporary' not in f]
rows = ds.dataset(files, format='parquet', partitioning=ds.partitioning(flavor='hive'), partition_base_dir=root).to_table().to_pylist() if files else []
print(json.dumps({
  'rows': len(rows),
  'distinct': len({(r['job_id'], r['row']) for r in rows}),
  'jobs': sorted({r['job_id'] for r in rows}),
  'files': [os.path.relpath(f, root) for f in files],
  'all': [[r['job_id'], r['row'], r['score'][0], r['score'][1]] for r in rows],
}))
`;

export interface LocalDataset {
  readonly rows: number;
  /** Distinct (job_id, row) pairs: equal to rows when nothing is written twice. */
  readonly distinct: number;
  readonly jobs: string[];
  readonly files: string[];
  /** job_id, row, score[0], score[1] of every row. */
  readonly all: [string, number, number, number][];
}

/** Every row of the Parquet files under a local folder (none when it does not exist). */
export async function readLocalDataset(root: string): Promise<LocalDataset> {
  if (!existsSync(root)) return { rows: 0, distinct: 0, jobs: [], files: [], all: [] };
  return JSON.parse(await runPython(READ, [root])) as LocalDataset;
}
