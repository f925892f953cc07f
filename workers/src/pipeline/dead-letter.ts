/** A failed job's dead letter, from its error: the stable code programs match, the reason people read. */
import { InferqError, printable } from '@inferq/shared';
import type { Envelope, ErrorCode } from '@inferq/shared';
import type { Delivery, DeadLetter } from '../sources/source.js';

/** Longest reason kept (a message may quote a value). */
const MAX_REASON = 2000;

/** The code of any error: ours carry one; anything else is INTERNAL. */
export function codeOf(err: unknown): ErrorCode {
  return err instanceof InferqError ? err.code : 'INTERNAL';
}

/** The dead letter of job `id` (a packed job's own), failed with `err`. `reply`: answer the caller with an error reply too. */
export function deadLetterOf(err: unknown, id: string, envelope: Envelope | undefined, delivery: Delivery, reply: boolean): DeadLetter {
  const message = err instanceof Error ? err.message : String(err);
  return {
    id,
    code: codeOf(err),
    reason: printable(message, MAX_REASON),
    retriable: err instanceof InferqError ? err.retriable : true,
    kind: err instanceof Error ? err.constructor.name : 'Error',
    model: envelope?.model ?? delivery.hints.model ?? '',
    version: envelope?.version ?? delivery.hints.version ?? '',
    attempts: delivery.attempt,
    reply,
    replyTo: envelope?.replyTo ?? delivery.hints.replyTo,
  };
}
