// CPU profile of a window of a process's main thread, for bench/kafka-profile.ts: preloaded
// (`--import ./bench/profile-window.mjs`) with INFERQ_BENCH_PROFILE=<file.cpuprofile>, the first
// SIGUSR2 starts V8's sampling profiler and the second writes the profile to that file (then
// `<file>.done`), so start-up and shutdown stay out of it. Does nothing without the variable.
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

const out = process.env['INFERQ_BENCH_PROFILE'];
const intervalUs = Number(process.env['INFERQ_BENCH_PROFILE_US'] ?? 200);

if (out !== undefined && out !== '') {
  const session = new Session();
  session.connect();
  let running = false;
  process.on('SIGUSR2', () => {
    if (!running) {
      running = true;
      session.post('Profiler.enable', () => session.post('Profiler.setSamplingInterval', { interval: intervalUs }, () => session.post('Profiler.start')));
      return;
    }
    running = false;
    session.post('Profiler.stop', (err, result) => {
      if (err !== null) {
        writeFileSync(`${out}.done`, `error: ${err.message}\n`);
        return;
      }
      writeFileSync(out, JSON.stringify(result.profile));
      writeFileSync(`${out}.done`, 'ok\n');
    });
  });
}
