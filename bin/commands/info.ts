import type { Command } from "commander";
import { tuningCacheStatus } from "../../runtime/autotune.ts";
import { acquireGpu } from "../../runtime/device.ts";

export function registerInfo(program: Command): void {
  program
    .command("info")
    .description("show the WebGPU adapter dehvf will use, its features and limits")
    .action(async () => {
      const gpu = await acquireGpu();
      const i = gpu.info;
      const cache = tuningCacheStatus(gpu, undefined, (line) => process.stderr.write(`${line}\n`));
      const out = [
        `adapter      ${i.description || i.vendor} (${i.vendor}, ${i.architecture})${i.isFallback ? "  [software fallback: CPU]" : ""}`,
        `subgroups    ${gpu.hasSubgroups ? `${i.subgroupMin}..${i.subgroupMax}` : "no"}`,
        `features     ${i.features.join(", ") || "none"}`,
        ...Object.entries(i.limits).map(([k, v]) => `${k.padEnd(36)} ${v.toLocaleString("en-US")}`),
        `autotune     ${cache.shapes ? `${cache.shapes} tuned matmul shapes` : "no tuned shapes"} in ${cache.file} (used with --autotune or DEHVF_AUTOTUNE=1)`,
      ];
      process.stdout.write(`${out.join("\n")}\n`);
      gpu.destroy();
    });
}
