import { describe, expect, it } from 'vitest';
import { ERROR_CODES, isErrorCode, readErrorCode, readRetriable, writeRetriable } from './error-codes.js';
import type { ErrorCode } from './error-codes.js';
import {
  ClosedError,
  ConfigError,
  ConnectionError,
  DataIOError,
  DeadlineExceededError,
  EnvelopeError,
  InferenceError,
  InferqError,
  InvalidInputError,
  ModelLoadError,
  SinkRefusedError,
  UnknownModelError,
} from './errors.js';

describe('error codes', () => {
  it('every error class has its own default code, and options.code is more precise', () => {
    const defaults: [InferqError, ErrorCode][] = [
      [new InferqError('x'), 'INTERNAL'],
      [new InvalidInputError('x'), 'BAD_INPUT'],
      [new EnvelopeError('x'), 'BAD_ENVELOPE'],
      [new UnknownModelError('x'), 'UNKNOWN_MODEL'],
      [new ModelLoadError('x'), 'MODEL_LOAD'],
      [new ConfigError('x'), 'CONFIG'],
      [new DeadlineExceededError('x'), 'DEADLINE'],
      [new ClosedError('x'), 'CLOSED'],
      [new InferenceError('x'), 'INFERENCE'],
      [new DataIOError('x'), 'IO'],
      [new SinkRefusedError('x', { sink: 'file:///out' }), 'SINK_REFUSED'],
      [new ConnectionError('x', { address: '127.0.0.1:6379' }), 'UNAVAILABLE'],
    ];
    for (const [err, code] of defaults) expect([err.name, err.code]).toEqual([err.constructor.name, code]);
    expect(new InvalidInputError('x', { code: 'NON_FINITE' }).code).toBe('NON_FINITE');
    expect(new UnknownModelError('x', { code: 'UNKNOWN_VERSION' }).code).toBe('UNKNOWN_VERSION');
    expect(new InferqError('x', { code: 'BUSY', retriable: true })).toMatchObject({ code: 'BUSY', retriable: true });
  });

  it("a subclass made elsewhere inherits its parent's code unless it sets its own", () => {
    class Abandoned extends ClosedError {}
    class Remote extends InferqError {
      static override readonly defaultCode: ErrorCode = 'IO';
    }
    expect(new Abandoned('x').code).toBe('CLOSED');
    expect(new Remote('x').code).toBe('IO');
    expect(new Remote('x', { code: 'UNAVAILABLE' }).code).toBe('UNAVAILABLE');
  });

  it("ConnectionError: code UNAVAILABLE, the cause's own code in causeCode (options.code still fills it)", () => {
    const err = new ConnectionError('redis 127.0.0.1:1: refused', { address: '127.0.0.1:1', causeCode: 'ECONNREFUSED' });
    expect(err).toMatchObject({ code: 'UNAVAILABLE', causeCode: 'ECONNREFUSED', address: '127.0.0.1:1', retriable: true });
    expect(new ConnectionError('x', { address: 'a', code: 'WRONGPASS' })).toMatchObject({ code: 'UNAVAILABLE', causeCode: 'WRONGPASS' });
    expect(new ConnectionError('x', { address: 'a' }).causeCode).toBeUndefined();
  });

  it('isErrorCode accepts exactly the listed codes', () => {
    for (const code of ERROR_CODES) expect(isErrorCode(code)).toBe(true);
    for (const value of ['bad_shape', 'BAD_SHAPE ', '', 'toString', 'constructor', 42, null, undefined, ['BAD_SHAPE']]) expect(isErrorCode(value)).toBe(false);
    expect(new Set(ERROR_CODES).size).toBe(ERROR_CODES.length);
  });

  it('readErrorCode: a known code as it is, an unknown one INTERNAL, none from the kind of an older worker', () => {
    expect(readErrorCode('NON_FINITE', 'InvalidInputError')).toBe('NON_FINITE');
    expect(readErrorCode('FROM_THE_FUTURE', 'InvalidInputError')).toBe('INTERNAL');
    expect(readErrorCode('', undefined)).toBe('INTERNAL');
    expect(readErrorCode(undefined, 'DeadlineExceededError')).toBe('DEADLINE');
    expect(readErrorCode(undefined, 'EnvelopeError')).toBe('BAD_ENVELOPE');
    expect(readErrorCode(undefined, 'RollAbandonedError')).toBe('CLOSED');
    expect(readErrorCode(undefined, 'TypeError')).toBe('INTERNAL');
    expect(readErrorCode(undefined, 'hasOwnProperty')).toBe('INTERNAL');
    expect(readErrorCode(undefined, undefined)).toBe('INTERNAL');
  });

  it('retriable on the wire: "true" or "false"; only "true" reads as true', () => {
    expect([writeRetriable(true), writeRetriable(false)]).toEqual(['true', 'false']);
    expect(readRetriable(writeRetriable(true))).toBe(true);
    for (const v of ['false', 'TRUE', '1', 'yes', '', undefined]) expect(readRetriable(v)).toBe(false);
  });
});
