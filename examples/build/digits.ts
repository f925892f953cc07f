/**
 * The UCI "Optical Recognition of Handwritten Digits" test set (Alpaydin & Kaynak,
 * CC BY 4.0) as shipped inside scikit-learn: sklearn/datasets/data/digits.csv.gz,
 * 1797 rows of 64 pixel counts (0..16, an 8x8 image) followed by the digit.
 *
 * Python only fetches the file: set DIGITS_CSV to the .csv.gz, or a venv under
 * ~/.cache/inferq/build-venv gets `pip install scikit-learn` and is asked where it is.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { createRng } from './rng.js';

export const DIGIT_PIXELS = 64;

/** Output columns of the digit-tags model, in order. */
export const DIGIT_TAGS = [
  ...Array.from({ length: 10 }, (_, k) => `digit_${k}`),
  'is_even',
  'is_prime',
  'has_loop',
  'is_large',
] as const;

export interface Digits {
  rows: number;
  /** rows × 64 raw pixel counts 0..16. */
  pixels: Float32Array;
  labels: Int32Array;
  split: ('train' | 'test')[];
}

export const BUILD_VENV = join(homedir(), '.cache', 'inferq', 'build-venv');
export const venvPython = (): string => join(BUILD_VENV, 'bin', 'python');

/** Path of digits.csv.gz: $DIGITS_CSV, or the copy inside scikit-learn in the build venv. */
export function locateDigitsCsv(log: (line: string) => void = console.log): string {
  const fromEnv = process.env['DIGITS_CSV'];
  if (fromEnv) {
    if (!existsSync(fromEnv)) throw new Error(`DIGITS_CSV: no file at "${fromEnv}"`);
    return fromEnv;
  }
  const python = venvPython();
  const findScript =
    "import importlib.util, os; s = importlib.util.find_spec('sklearn'); " +
    "print(os.path.join(s.submodule_search_locations[0], 'datasets', 'data', 'digits.csv.gz') if s else '')";
  const find = (): string => (existsSync(python) ? execFileSync(python, ['-c', findScript], { encoding: 'utf8' }).trim() : '');
  let path = find();
  if (!path) {
    log(`fetching scikit-learn into ${BUILD_VENV} (for its bundled digits.csv.gz)`);
    if (!existsSync(python)) execFileSync('python3', ['-m', 'venv', BUILD_VENV], { stdio: 'inherit' });
    execFileSync(python, ['-m', 'pip', 'install', '--quiet', 'scikit-learn'], { stdio: 'inherit' });
    path = find();
  }
  if (!path || !existsSync(path)) throw new Error(`digits.csv.gz: not found in scikit-learn (looked at "${path}"); set DIGITS_CSV`);
  return path;
}

/** Reads the gzipped CSV and assigns a seeded 80/20 train/test split. */
export function loadDigits(csvGzPath: string, seed: number, testFraction = 0.2): Digits {
  const lines = gunzipSync(readFileSync(csvGzPath)).toString('utf8').split('\n').filter((l) => l.trim() !== '');
  const rows = lines.length;
  const pixels = new Float32Array(rows * DIGIT_PIXELS);
  const labels = new Int32Array(rows);
  lines.forEach((line, r) => {
    const cells = line.split(',').map(Number);
    const label = cells[DIGIT_PIXELS];
    if (cells.length !== DIGIT_PIXELS + 1 || label === undefined || !Number.isInteger(label) || label < 0 || label > 9) {
      throw new Error(`${csvGzPath} line ${r + 1}: expected 64 pixels and a digit label, got "${line.slice(0, 60)}…"`);
    }
    for (let j = 0; j < DIGIT_PIXELS; j++) {
      const v = cells[j] as number;
      if (!(v >= 0 && v <= 16)) throw new Error(`${csvGzPath} line ${r + 1}: pixel ${j} is ${v}, expected 0..16`);
      pixels[r * DIGIT_PIXELS + j] = v;
    }
    labels[r] = label;
  });
  const order = createRng(seed).shuffle(Array.from({ length: rows }, (_, i) => i));
  const testRows = Math.round(rows * testFraction);
  const split: ('train' | 'test')[] = new Array<'train' | 'test'>(rows).fill('train');
  for (const i of order.slice(0, testRows)) split[i] = 'test';
  return { rows, pixels, labels, split };
}

/** The 14 targets of a digit: one-hot 0..9, then is_even, is_prime, has_loop, is_large. */
export function digitTags(label: number): number[] {
  const tags = Array.from({ length: 10 }, (_, k) => (k === label ? 1 : 0));
  tags.push(label % 2 === 0 ? 1 : 0, [2, 3, 5, 7].includes(label) ? 1 : 0, [0, 6, 8, 9].includes(label) ? 1 : 0, label >= 5 ? 1 : 0);
  return tags;
}
