/** A BullMQ job's envelope bytes, from job data that is untrusted: checked before anything is read. */
import type { Job } from 'bullmq';
import { InvalidInputError, checkJobData, jobSuffix, printable } from '@inferq/shared';
import type { JobData, RedisKeys } from '@inferq/shared';

/** The job's data, or InvalidInputError (BAD_JOB_DATA) naming what is not ours. */
export function jobData(job: Job): JobData {
  const id = job.id ?? '';
  const data = checkJobData(job.data);
  if (typeof data === 'string') throw new InvalidInputError(`${data}${jobSuffix(id)}`, { jobId: id, code: 'BAD_JOB_DATA' });
  return data;
}

/**
 * The envelope of a job: inline (base64) or under the payload key its data names, which must
 * be one of this queue's payload keys (a forged job must not make the worker read any key).
 */
export async function loadPayload(reader: { get(key: string): Promise<Buffer | null> }, keys: RedisKeys, job: Job, maxBytes: number): Promise<Uint8Array> {
  const id = job.id ?? '';
  const data = jobData(job);
  if (data.bytes > maxBytes) {
    throw new InvalidInputError(`payload of ${data.bytes} bytes exceeds the ${maxBytes}-byte limit${jobSuffix(id)}`, { jobId: id, model: data.model, code: 'PAYLOAD_TOO_LARGE' });
  }
  if (data.b64 !== undefined) {
    if (data.b64.length > Math.ceil((maxBytes * 4) / 3) + 4) throw new InvalidInputError(`inline payload exceeds the ${maxBytes}-byte limit${jobSuffix(id)}`, { jobId: id, code: 'PAYLOAD_TOO_LARGE' });
    return new Uint8Array(Buffer.from(data.b64, 'base64'));
  }
  const key = data.key!;
  if (!key.startsWith(keys.payloadPrefix)) {
    throw new InvalidInputError(`payload key "${printable(key)}" is not one of this queue's (${keys.payloadPrefix}…)${jobSuffix(id)}`, { jobId: id, code: 'BAD_JOB_DATA' });
  }
  const buf = await reader.get(key);
  if (buf === null) throw new InvalidInputError(`payload key "${printable(key)}" is missing (expired, or never written)${jobSuffix(id)}`, { jobId: id, model: data.model, code: 'PAYLOAD_MISSING' });
  if (buf.byteLength !== data.bytes) throw new InvalidInputError(`payload of job has ${buf.byteLength} bytes, job says ${data.bytes}${jobSuffix(id)}`, { jobId: id, model: data.model, code: 'BAD_JOB_DATA' });
  return new Uint8Array(buf.buffer, buf.byteOffset, buf.byteLength);
}
