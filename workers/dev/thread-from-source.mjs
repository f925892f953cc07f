// The model thread when inferq runs from its TypeScript sources (vitest, `node --import tsx`), where
// only thread.ts exists: on Node 20 loader hooks given as flags do not reach a worker thread's
// modules, so tsx is registered from inside the thread (see threadEntry() in worker-session.ts).
// The build never uses this file, and the package does not ship it.
import { tsImport } from 'tsx/esm/api';

await tsImport('../src/runners/onnx/thread.ts', import.meta.url);
