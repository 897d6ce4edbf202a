// Exit 0 when Dawn finds a WebGPU adapter, 1 otherwise (used by setup.sh).
import { create, globals } from "webgpu";

Object.assign(globalThis, globals);
process.env.XDG_RUNTIME_DIR ??= "/tmp";
const gpu = create([]);
const adapter = await gpu.requestAdapter().catch(() => null);
if (adapter) console.log(`webgpu adapter: ${adapter.info.description || adapter.info.vendor}`);
process.exit(adapter ? 0 : 1);
