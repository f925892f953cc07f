/** Parses a reply stream entry read with readStream(), the way the SDK does. */
import { parseReply } from '../../producer/src/replies.js';
import type { Reply } from '@inferq/producer';

export function parseReplyForTest(fields: Map<string, Buffer>): Reply {
  const flat: Buffer[] = [];
  for (const [k, v] of fields) flat.push(Buffer.from(k), v);
  return parseReply(flat);
}
