/**
 * Parses log output line by line, strictly: every line must be one JSON object, and no
 * object (at any depth) may name a key twice — JSON.parse would silently keep the last.
 */

/** Where a line breaks the rule, or undefined when it is a JSON object without duplicate keys. */
export function duplicateKeyProblem(line: string): string | undefined {
  let i = 0;
  const fail = (what: string): never => {
    throw new Error(`${what} at column ${i}`);
  };
  const ws = (): void => {
    while (i < line.length && ' \t\r\n'.includes(line[i]!)) i++;
  };
  const str = (): string => {
    if (line[i] !== '"') fail('expected a string');
    const start = i++;
    while (i < line.length && line[i] !== '"') i += line[i] === '\\' ? 2 : 1;
    if (i >= line.length) fail('unterminated string');
    i++;
    return JSON.parse(line.slice(start, i)) as string;
  };
  const value = (path: string): void => {
    ws();
    const c = line[i];
    if (c === '{') return object(path);
    if (c === '[') {
      i++;
      ws();
      if (line[i] === ']') return void i++;
      for (let n = 0; ; n++) {
        value(`${path}[${n}]`);
        ws();
        if (line[i] === ']') return void i++;
        if (line[i] !== ',') fail('expected , or ]');
        i++;
      }
    }
    if (c === '"') return void str();
    const m = /^(?:-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?|true|false|null)/.exec(line.slice(i));
    if (m === null) fail('expected a value');
    i += m![0].length;
  };
  const object = (path: string): void => {
    i++;
    const seen = new Set<string>();
    ws();
    if (line[i] === '}') return void i++;
    for (;;) {
      ws();
      const key = str();
      if (seen.has(key)) fail(`duplicate key "${path}${key}"`);
      seen.add(key);
      ws();
      if (line[i] !== ':') fail('expected :');
      i++;
      value(`${path}${key}.`);
      ws();
      if (line[i] === '}') return void i++;
      if (line[i] !== ',') fail('expected , or }');
      i++;
    }
  };
  try {
    ws();
    if (line[i] !== '{') fail('not a JSON object');
    object('');
    ws();
    if (i !== line.length) fail('text after the object');
    return undefined;
  } catch (err) {
    return (err as Error).message;
  }
}

/** Every non-empty line of `text` as an object; throws naming the first line that is not strict JSON. */
export function strictJsonLines(text: string): Record<string, unknown>[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const problem = duplicateKeyProblem(l);
      if (problem !== undefined) throw new Error(`log line is not a strict JSON object (${problem}): ${l.slice(0, 300)}`);
      return JSON.parse(l) as Record<string, unknown>;
    });
}
