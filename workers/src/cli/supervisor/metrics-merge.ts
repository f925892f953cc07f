/**
 * Merges the children's Prometheus text expositions (format 0.0.4) into one: each metric
 * family once, with one `# HELP` and one `# TYPE`, followed by every child's samples. A
 * sample without a `device` label gets its child's, so that two children's series never
 * collide; a series that still repeats one already taken is dropped (an exposition may not
 * hold it twice).
 */

export interface ChildExposition {
  /** The child's device, e.g. `cuda:0`. */
  readonly device: string;
  readonly text: string;
}

interface Family {
  help?: string;
  type?: string;
  samples: string[];
}

interface Sample {
  readonly name: string;
  /** The label pairs as written (`a="x",b="y"`), without the braces. */
  readonly labels: string;
  readonly hasDevice: boolean;
  /** Value and optional timestamp. */
  readonly rest: string;
}

const SUFFIXES = ['_bucket', '_sum', '_count', '_total', '_created'];

/** One exposition holding every family of `children`, in the order first seen. */
export function mergeExpositions(children: readonly ChildExposition[]): string {
  const families = new Map<string, Family>();
  const series = new Set<string>();
  for (const child of children) {
    const typeOf = new Map<string, string | undefined>(); // this child's families and their types
    let current: string | undefined;
    for (const line of child.text.split('\n')) {
      const meta = /^#\s+(HELP|TYPE)\s+([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\s(.*))?$/.exec(line);
      if (meta !== null) {
        const name = meta[2]!;
        const text = meta[3] ?? '';
        current = name;
        const family = familyOf(families, name);
        if (meta[1] === 'HELP') family.help ??= text;
        else {
          typeOf.set(name, text.trim());
          family.type ??= text.trim();
        }
        continue;
      }
      if (line.trim() === '' || line.startsWith('#')) continue;
      const sample = parseSample(line);
      if (sample === undefined) continue; // not a sample line: nothing a scraper could read either
      const name = current !== undefined && belongsTo(sample.name, current) ? current : sample.name;
      const family = familyOf(families, name);
      // A child that disagrees on a family's type would make the merged family invalid.
      if (family.type !== undefined && typeOf.has(name) && typeOf.get(name) !== family.type) continue;
      const labels = sample.hasDevice ? sample.labels : joinLabels(`device="${escapeLabel(child.device)}"`, sample.labels);
      const key = `${sample.name}{${labels}}`;
      if (series.has(key)) continue;
      series.add(key);
      family.samples.push(`${key} ${sample.rest}`);
    }
  }
  const out: string[] = [];
  for (const [name, family] of families) {
    if (family.samples.length === 0) continue;
    if (family.help !== undefined) out.push(`# HELP ${name} ${family.help}`);
    if (family.type !== undefined) out.push(`# TYPE ${name} ${family.type}`);
    out.push(...family.samples);
  }
  return out.length === 0 ? '' : `${out.join('\n')}\n`;
}

function familyOf(families: Map<string, Family>, name: string): Family {
  let family = families.get(name);
  if (family === undefined) {
    family = { samples: [] };
    families.set(name, family);
  }
  return family;
}

function belongsTo(sample: string, family: string): boolean {
  return sample === family || SUFFIXES.some((s) => sample === `${family}${s}`);
}

function joinLabels(a: string, b: string): string {
  return b === '' ? a : `${a},${b}`;
}

/** Escapes a label value for the text format. */
export function escapeLabel(value: string): string {
  return value.replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n');
}

/** Parses `name{a="x",b="y"} value [timestamp]`; undefined when the line is not one. */
function parseSample(line: string): Sample | undefined {
  const head = /^([a-zA-Z_:][a-zA-Z0-9_:]*)/.exec(line);
  if (head === null) return undefined;
  const name = head[1]!;
  let i = name.length;
  const labelNames: string[] = [];
  let labels = '';
  if (line[i] === '{') {
    const start = ++i;
    for (;;) {
      while (line[i] === ' ' || line[i] === ',') i++;
      if (line[i] === '}') break;
      const label = /^([a-zA-Z_][a-zA-Z0-9_]*)\s*=\s*"/.exec(line.slice(i));
      if (label === null) return undefined;
      labelNames.push(label[1]!);
      i += label[0].length;
      while (i < line.length && line[i] !== '"') i += line[i] === '\\' ? 2 : 1;
      if (i >= line.length) return undefined;
      i++; // the closing quote
    }
    labels = line.slice(start, i).replace(/,\s*$/, '');
    i++; // the closing brace
  }
  const rest = line.slice(i).trim();
  if (!/^\s/.test(line.slice(i)) || !isValueAndTimestamp(rest)) return undefined;
  return { name, labels, hasDevice: labelNames.includes('device'), rest };
}

function isValueAndTimestamp(text: string): boolean {
  const [value = '', timestamp, ...more] = text.split(/\s+/);
  if (more.length > 0 || (timestamp !== undefined && !/^-?\d+$/.test(timestamp))) return false;
  return /^(?:[+-]?Inf|NaN)$/.test(value) || (value !== '' && Number.isFinite(Number(value)));
}
