import { describe, expect, it } from 'vitest';
import { InferqError } from '@inferq/shared';
import { PredictTimeoutError, RemoteJobError } from './errors.js';

describe('SDK errors', () => {
  it('PredictTimeoutError: REPLY_TIMEOUT, retriable', () => {
    const err = new PredictTimeoutError('no reply', { jobId: 'j', model: 'm' });
    expect(err).toBeInstanceOf(InferqError);
    expect(err).toMatchObject({ code: 'REPLY_TIMEOUT', retriable: true, jobId: 'j', model: 'm' });
  });

  it("RemoteJobError: the worker's code and retriable, its kind only informational", () => {
    const err = new RemoteJobError('job j failed: busy', { code: 'BUSY', retriable: true, kind: 'InferqError' }, { jobId: 'j' });
    expect(err).toMatchObject({ code: 'BUSY', retriable: true, kind: 'InferqError', jobId: 'j', name: 'RemoteJobError' });
  });
});
