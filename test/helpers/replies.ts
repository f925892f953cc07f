/** Parses a reply stream entry read with readStream(), the way the SDK does. */
import { parseReplies } from '@inferq/producer';
import type { Reply } from '@inferq/producer';

/** Every reply of an entry (several when it answers a packed envelope). */
export function parseRepliesForTest(fields: Map<string, Buffer>): Reply[] {
  const flat: Buffer[] = [];
  for (const [k, v] of fields) flat.push(Buffer.from(k), v);
  return parseReplies(flat);
}
