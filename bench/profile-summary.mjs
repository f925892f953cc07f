// Summarises V8 .cpuprofile files (node --cpu-prof, bench/kafka-profile.ts, bench/kafka-clients.ts):
// self time by function and by package, and by "owner".
//
//   node bench/profile-summary.mjs PROFILE... [--per N --unit row|message] [--top 30] [--wall] [--callers NAME]
//
// Self time is the time of the samples whose top frame is that function. Each sample counts as
// the profile's median sampling interval: on a loaded machine a thread descheduled between two
// samples gives the next one a long time delta, so summing deltas (--wall) charges the wait to
// whatever ran next. "(idle)" is left out of the total; "(program)" (native work V8 cannot
// attribute) and "(garbage collector)" stay in it. With --per N the times are also given per
// unit (µs per row when N is the number of rows).
// "By owner" charges the self time of Node's own code, native frames and the garbage collector to
// the nearest caller in a package or workspace file (what asked for the copy, the write, the
// allocation), so a Buffer copy shows up under the kafkajs function that made it; the GC, which
// has no stack, goes to the owner of the sample before it (an approximation).
// --callers NAME lists the stacks (5 frames) under which the function NAME spent its self time.
import { readFileSync } from 'node:fs';

const args = process.argv.slice(2);
const opt = (name, fallback) => {
  const i = args.indexOf(`--${name}`);
  if (i < 0) return fallback;
  const v = args[i + 1];
  args.splice(i, 2);
  return v;
};
const per = Number(opt('per', '0'));
const unit = opt('unit', 'row');
const top = Number(opt('top', '30'));
const callersOf = opt('callers', undefined);
const wallIndex = args.indexOf('--wall');
const wall = wallIndex >= 0;
if (wall) args.splice(wallIndex, 1);
if (args.length === 0) {
  console.error('usage: node bench/profile-summary.mjs PROFILE... [--per N --unit row|message] [--top 30] [--wall] [--callers NAME]');
  process.exit(2);
}

/** Where a frame's code lives: an npm package, a workspace, Node's own code, or a V8 pseudo-frame. */
function packageOf(url, name) {
  if (url === '') return name.startsWith('(') ? name : '(native)';
  const nm = url.lastIndexOf('/node_modules/');
  if (nm >= 0) {
    const rest = url.slice(nm + '/node_modules/'.length).split('/');
    return rest[0].startsWith('@') ? `${rest[0]}/${rest[1]}` : rest[0];
  }
  if (url.startsWith('node:')) return 'node:internal';
  const ws = /\/(shared|producer|workers|bench|test)\/(src\/)?([^/]+)/.exec(url);
  if (ws !== null) return ws[1] === 'bench' || ws[1] === 'test' ? ws[1] : `${ws[1]}/${ws[3].replace(/\.[mc]?[tj]s$/, '')}`;
  return url;
}

const byFn = new Map();
const byPkg = new Map();
const byOwner = new Map();
const byOwnerPkg = new Map();
const callers = new Map();
const add = (m, k, dt) => m.set(k, (m.get(k) ?? 0) + dt);
const frameName = (cf) => {
  const short = cf.url.replace(/^.*\/node_modules\//, '').replace(/^file:\/\/.*?\/(shared|producer|workers|bench|test)\//, '$1/');
  return `${cf.functionName || '(anonymous)'} ${short}${cf.url === '' ? '' : `:${cf.lineNumber + 1}`}`;
};
const isOurs = (cf) => cf.url !== '' && !cf.url.startsWith('node:');
let total = 0;
let idle = 0;
for (const file of args) {
  const p = JSON.parse(readFileSync(file, 'utf8'));
  const nodes = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
  // The GC pseudo-frame has no stack: charge it to the JS frame of the sample before it.
  let lastOwner;
  const sorted = p.timeDeltas.slice(1).sort((a, b) => a - b);
  const interval = sorted[sorted.length >> 1] ?? 0;
  // The first delta runs from the profile's start to its first sample, not a sample interval.
  for (let i = 1; i < p.samples.length; i++) {
    const n = nodes.get(p.samples[i]);
    const dt = wall ? (p.timeDeltas[i] ?? 0) : interval;
    const { functionName, url } = n.callFrame;
    if (functionName === '(idle)') {
      idle += dt;
      continue;
    }
    total += dt;
    add(byFn, frameName(n.callFrame), dt);
    add(byPkg, packageOf(url, functionName), dt);
    let o = n;
    while (o !== undefined && !isOurs(o.callFrame)) o = nodes.get(parent.get(o.id));
    if (o === undefined && functionName === '(garbage collector)') o = lastOwner;
    if (o !== undefined) lastOwner = o;
    add(byOwner, o === undefined ? frameName(n.callFrame) : frameName(o.callFrame), dt);
    add(byOwnerPkg, o === undefined ? packageOf(url, functionName) : packageOf(o.callFrame.url, o.callFrame.functionName), dt);
    if (callersOf !== undefined && functionName === callersOf) {
      const stack = [];
      for (let f = n; f !== undefined && stack.length < 5; f = nodes.get(parent.get(f.id))) stack.push(frameName(f.callFrame));
      add(callers, stack.join(' < '), dt);
    }
  }
}

const show = (title, m, limit) => {
  console.log(`\n${title}`);
  const rows = [...m].sort((a, b) => b[1] - a[1]).slice(0, limit);
  for (const [k, us] of rows) {
    const pct = ((us / total) * 100).toFixed(1).padStart(5);
    const ms = (us / 1000).toFixed(1).padStart(9);
    const unitCol = per > 0 ? `${(us / per).toFixed(3).padStart(9)} µs/${unit}` : '';
    console.log(`${pct} % ${ms} ms ${unitCol}  ${k}`);
  }
};
console.log(`${args.length} profile(s), ${wall ? 'wall time deltas' : 'samples × median interval'}: ${(total / 1000).toFixed(0)} ms busy, ${(idle / 1000).toFixed(0)} ms idle${per > 0 ? `; busy ${(total / per).toFixed(3)} µs/${unit} over ${per} ${unit}s` : ''}`);
show('self time by package', byPkg, top);
show('self time by function', byFn, top);
show('by owner package (Node internals, native frames and GC charged to their nearest package caller)', byOwnerPkg, top);
show('by owner function', byOwner, top);
if (callersOf !== undefined) show(`stacks of ${callersOf}`, callers, top);
