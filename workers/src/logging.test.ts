import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const LOGGING = fileURLToPath(new URL('./logging.ts', import.meta.url));

/** Runs `body` in a child process with the logger at `logger` and returns its stderr lines (the logger writes fd 2). */
function logLines(body: string): string[] {
  const script = `import { createLogger } from ${JSON.stringify(LOGGING)}; const logger = createLogger({ level: 'debug', base: { cmd: 't', device: 'cpu' } }); ${body}`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  return r.stderr.split('\n').filter((l) => l !== '');
}

const count = (line: string, key: string): number => line.split(`"${key}":`).length - 1;

describe('createLogger', () => {
  it('writes a key bound by the root, a child or a grandchild once, however often it is named again with the same value', () => {
    const [a, b, c] = logLines(`
      const child = logger.child({ model: 'm', device: 'cpu' });
      child.info({ device: 'cpu', model: 'm', x: 1 }, 'one');
      child.child({ model: 'm', version: '2' }).warn({ version: '2' }, 'two');
      logger.debug({ device: 'cpu' }, 'three');`);
    for (const line of [a!, b!, c!]) expect(count(line, 'device'), line).toBe(1);
    expect(count(a!, 'model')).toBe(1);
    expect(JSON.parse(a!)).toMatchObject({ cmd: 't', device: 'cpu', model: 'm', x: 1, msg: 'one', level: 30 });
    expect(count(b!, 'version')).toBe(1);
    expect(JSON.parse(b!)).toMatchObject({ model: 'm', version: '2', msg: 'two', level: 40 });
  });

  it('keeps errors and fields that are not bound', () => {
    const [line] = logLines(`logger.child({ model: 'm' }).error({ err: new Error('boom'), queue: 'q' }, 'failed');`);
    expect(JSON.parse(line!)).toMatchObject({ model: 'm', queue: 'q', err: { message: 'boom' }, msg: 'failed' });
  });
});
