/** A CPU profile of this process's main thread over one piece of work, for bench/profile-summary.mjs. */
import { writeFileSync } from 'node:fs';
import { Session } from 'node:inspector';

/** Runs `work` under V8's sampling profiler (200 µs) and writes the profile to `file`; without a file it only runs `work`. */
export async function profiled<T>(file: string | undefined, work: () => Promise<T>): Promise<T> {
  if (file === undefined) return work();
  const session = new Session();
  session.connect();
  const post = (method: string, params?: object): Promise<unknown> =>
    new Promise((ok, fail) => session.post(method, params, (err, res) => (err === null ? ok(res) : fail(err))));
  await post('Profiler.enable');
  await post('Profiler.setSamplingInterval', { interval: 200 });
  await post('Profiler.start');
  try {
    return await work();
  } finally {
    const { profile } = (await post('Profiler.stop')) as { profile: unknown };
    writeFileSync(file, JSON.stringify(profile));
    session.disconnect();
  }
}
