import { describe, expect, it } from 'vitest';
import { KAFKA_HEADERS } from '@inferq/shared';
import { parseKafkaLetter } from './kafka-dead-letters.js';
import { parseLetter } from './redis-dead-letters.js';
import { workerClients } from './status.js';
import { age, renderTable, safeJson } from './table.js';

describe('renderTable', () => {
  it('aligns columns, escapes control and bidi characters and cuts long cells', () => {
    const text = renderTable(['A', 'LONGER'], [['x\u202eevil', 1], ['line\nbreak', 'y'.repeat(10)]], 8);
    expect(text.split('\n')).toEqual(['A               LONGER', 'x\\u202eevil     1', 'line\\u000abre…  yyyyyyyy…', '']);
  });
});

describe('safeJson', () => {
  it('parses back to the same data and holds no character a terminal acts on', () => {
    const value = { reason: 'a\u202eb\u0085c\u2028d\u0007' };
    const text = safeJson(value);
    expect(JSON.parse(text)).toEqual(value);
    expect([...text].filter((c) => c !== '\n' && (c < ' ' || (c >= '\u007f' && c <= '\u009f') || c === '\u2028' || c === '\u202e'))).toEqual([]);
  });
});

describe('age', () => {
  it('reads in the largest whole unit', () => {
    expect(age(undefined)).toBe('-');
    expect(age(1000, 3500)).toBe('2.5 s');
    expect(age(0, 90_000)).toBe('1 min');
    expect(age(0, 7_200_000)).toBe('2 h');
    expect(age(0, 3 * 86_400_000)).toBe('3 d');
  });
});

describe('parseLetter', () => {
  it('reads the fields a worker writes and leaves missing or malformed ones empty', () => {
    const l = parseLetter('1-0', ['id', 'j', 'code', 'BAD_SHAPE', 'retriable', 'false', 'attempts', '2', 'ts', '123', 'payload', 'k', 'payloadBytes', '40', 'job', 'p']);
    expect(l).toMatchObject({ entry: '1-0', id: 'j', code: 'BAD_SHAPE', retriable: false, attempts: 2, ts: 123, payload: 'k', payloadBytes: 40, job: 'p', model: '' });
    expect(parseLetter('2-0', ['attempts', 'x', 'ts', '-1'])).toMatchObject({ attempts: 0, ts: undefined, payload: '' });
  });
});

describe('parseKafkaLetter', () => {
  it('reads the headers a worker writes', () => {
    const l = parseKafkaLetter(1, {
      key: Buffer.from('k'),
      value: Buffer.alloc(10),
      offset: '7',
      timestamp: '0',
      attributes: 0,
      headers: { [KAFKA_HEADERS.id]: 'j', [KAFKA_HEADERS.code]: 'DEADLINE', [KAFKA_HEADERS.sourceTopic]: 't', [KAFKA_HEADERS.sourcePartition]: '0', [KAFKA_HEADERS.sourceOffset]: '3', [KAFKA_HEADERS.attempts]: '1' },
    });
    expect(l).toMatchObject({ partition: 1, offset: '7', id: 'j', code: 'DEADLINE', source: 't:0:3', key: 'k', bytes: 10, attempts: 1 });
  });
});

describe('workerClients', () => {
  it('one entry per worker name (a worker holds several connections), the oldest connection', () => {
    const clients = [
      { rawname: 'inferq:cQ==:w:host:1', addr: '1.2.3.4:5', age: '10', idle: '0' },
      { rawname: 'inferq:cQ==:w:host:1', addr: '1.2.3.4:6', age: '12', idle: '1' },
      { rawname: 'inferq:cQ==:w:other:2', addr: '1.2.3.5:5', age: '3', idle: '3' },
    ];
    expect(workerClients(clients)).toEqual([
      { name: 'host:1', addr: '1.2.3.4:6', ageSeconds: 12, idleSeconds: 1 },
      { name: 'other:2', addr: '1.2.3.5:5', ageSeconds: 3, idleSeconds: 3 },
    ]);
  });
});
