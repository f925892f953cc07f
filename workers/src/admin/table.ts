/**
 * Output of the admin commands: aligned text tables for people, JSON for scripts. Everything
 * shown may come from a queue (untrusted): table cells go through printable(), and JSON keeps
 * the exact values but escapes every character a terminal could be tricked by.
 */
import { printable } from '@inferq/shared';

/** A table with a header row; cells are cut to `maxCell` characters and escaped. */
export function renderTable(header: readonly string[], rows: readonly (readonly (string | number)[])[], maxCell = 60): string {
  const cells = [header.map((h) => printable(h, maxCell)), ...rows.map((r) => header.map((_, i) => printable(String(r[i] ?? ''), maxCell)))];
  const widths = header.map((_, i) => Math.max(...cells.map((r) => [...r[i]!].length)));
  return cells.map((r) => r.map((c, i) => (i === r.length - 1 ? c : c + ' '.repeat(widths[i]! - [...c].length))).join('  ').trimEnd()).join('\n') + '\n';
}

/** Characters JSON.stringify leaves as they are but a terminal acts on: C1 controls, bidi overrides, line separators. */
const UNSAFE_IN_JSON = /[\u007f-\u009f\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069]/g;

/** JSON text of `value` (the same data when parsed) with no character a terminal could be tricked by. */
export function safeJson(value: unknown): string {
  return JSON.stringify(value, null, 2).replace(UNSAFE_IN_JSON, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`) + '\n';
}

/** "3.2 s", "4 min", "2 h", "5 d" ago, for a timestamp (epoch ms); "-" when unknown. */
export function age(ts: number | undefined, now = Date.now()): string {
  if (ts === undefined || !Number.isFinite(ts)) return '-';
  const s = Math.max(0, (now - ts) / 1000);
  if (s < 60) return `${s.toFixed(s < 10 ? 1 : 0)} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min`;
  if (s < 86_400) return `${Math.floor(s / 3600)} h`;
  return `${Math.floor(s / 86_400)} d`;
}
