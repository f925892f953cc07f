/**
 * Whether a failed write can succeed if tried again. A permanent failure (the folder is a
 * file, no permission, an invalid name) fails the jobs whose sink it is; anything else
 * (network, a full disk, an HDFS in safe mode) is retried with backoff.
 */
import { InferqError } from '@inferq/shared';

/** errno codes that a retry of the same write cannot fix. */
const PERMANENT_CODES = new Set(['ENOTDIR', 'EISDIR', 'EACCES', 'EPERM', 'EROFS', 'ENAMETOOLONG', 'EINVAL', 'ELOOP', 'EEXIST', 'ERR_INVALID_ARG_VALUE', 'ERR_INVALID_ARG_TYPE']);

/** True when retrying the write cannot help. Walks `cause` chains; an InferqError says so itself through `retriable`. */
export function isPermanentWriteError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    if (e instanceof InferqError) return !e.retriable;
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && PERMANENT_CODES.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/** The errno or exception name of a write error, for messages ("ENOTDIR", "AccessControlException"). */
export function writeErrorCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e !== undefined && e !== null && depth < 8; depth++) {
    const named = (e as { exception?: unknown }).exception ?? (e as { code?: unknown }).code;
    if (typeof named === 'string') return named;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** "CODE: message" for a write error, without repeating a code the message already starts with. */
export function describeWriteError(err: unknown): string {
  const message = err instanceof Error ? err.message : String(err);
  const code = writeErrorCode(err);
  return code === undefined || message.startsWith(code) ? message : `${code}: ${message}`;
}
