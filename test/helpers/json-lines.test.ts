import { describe, expect, it } from 'vitest';
import { duplicateKeyProblem, strictJsonLines } from './json-lines.js';

describe('strict JSON lines', () => {
  it('accepts objects without repeated keys, nested ones included', () => {
    expect(duplicateKeyProblem('{"a":1,"b":{"a":[1,{"a":"x\\"y"}],"c":null},"d":-1.5e3,"e":true}')).toBeUndefined();
  });

  it('names a key given twice, at the top and nested', () => {
    expect(duplicateKeyProblem('{"device":"cpu","msg":"x","device":"cpu"}')).toContain('duplicate key "device"');
    expect(duplicateKeyProblem('{"err":{"code":"A","code":"B"}}')).toContain('duplicate key "err.code"');
  });

  it('refuses what is not one JSON object', () => {
    expect(duplicateKeyProblem('inferq worker: serving')).toContain('not a JSON object');
    expect(duplicateKeyProblem('{"a":1} trailing')).toContain('text after the object');
    expect(() => strictJsonLines('{"a":1}\n{"a":1,"a":2}\n')).toThrow(/duplicate key "a"/);
    expect(strictJsonLines('{"a":1}\n\n{"b":2}\n')).toEqual([{ a: 1 }, { b: 2 }]);
  });
});
