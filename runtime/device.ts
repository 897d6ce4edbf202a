import { create, globals } from "webgpu";
import { UserFacingError } from "../util/user-facing-error.ts";
import { type Gpu, openGpu, spinning } from "./gpu.ts";
import { withoutNativeNoise } from "./quiet-stderr.ts";

export { type DeviceInfo, type Gpu, spinBriefly } from "./gpu.ts";

/**
 * The process-wide Dawn instance. It must stay referenced for the life of the process:
 * if V8 collects it, Dawn crashes (see ../shared/notes/webgpu-on-cpu.md).
 */
let instance: GPU | undefined;

export class NoAdapterError extends UserFacingError {
  constructor() {
    super(
      [
        "no WebGPU adapter found.",
        "dehvf runs on any Vulkan device through Dawn; on a machine without a GPU it uses Mesa's",
        "lavapipe (software Vulkan, Mesa >= 24). On Debian 12 / Ubuntu:",
        "  npm run setup                  # installs it from bookworm-backports when missing",
        "or by hand:",
        "  sudo apt-get install -y -t bookworm-backports mesa-vulkan-drivers libvulkan1",
        "(Debian 12's own Mesa 22 is too old; add bookworm-backports to apt sources first.)",
      ].join("\n"),
    );
    this.name = "NoAdapterError";
  }
}

/**
 * While a GPU promise is pending, Dawn's binding re-arms `setImmediate`, keeping one
 * core busy; on a 2-core machine that starves lavapipe. Routing the re-arms through
 * setTimeout(0) costs ~1 ms per wait and was measured +50-60% on large kernels.
 * spinBriefly lets a short wait poll without that millisecond.
 */
function yieldToLavapipe(): void {
  const g = globalThis as unknown as { setImmediate: (f: (...a: unknown[]) => void, ...a: unknown[]) => unknown };
  const immediate = g.setImmediate;
  g.setImmediate = (f, ...a) => (spinning() ? immediate(f, ...a) : setTimeout(f, 0, ...a));
}

export async function acquireGpu(): Promise<Gpu> {
  process.env.XDG_RUNTIME_DIR ??= "/tmp";
  if (!instance) {
    Object.assign(globalThis, globals);
    instance = create([]);
  }
  const gpu = instance;
  const adapter = await withoutNativeNoise(() => gpu.requestAdapter({ powerPreference: "high-performance" }));
  if (!adapter) throw new NoAdapterError();
  return openGpu(adapter, yieldToLavapipe);
}
