// The model thread when inferq runs from its TypeScript sources (vitest, `node --import tsx`), where
// only thread.ts exists: Node 20 gives a worker thread no loader hooks, so tsx's API loads it
// (see threadEntry() in worker-session.ts). The build never uses this file.
import { tsImport } from 'tsx/esm/api';

await tsImport('./thread.ts', import.meta.url);
