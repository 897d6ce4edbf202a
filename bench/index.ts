/**
 * Benchmarks: `npm run bench` runs them all, `npm run bench -- NAME [args]` one.
 * Each entry is a module whose `main(argv)` prints its own table; add new ones to BENCHES.
 */
import { spawnSync } from "node:child_process";
import { fileURLToPath } from "node:url";

const BENCHES: Record<string, () => Promise<{ main(argv: readonly string[]): Promise<void> }>> = {
  matmul: () => import("./matmul.ts"),
  layer: () => import("./layer.ts"),
  "dehvf-vs-concat": () => import("./dehvf-vs-concat.ts"),
  fusion: () => import("./fusion.ts"),
  generate: () => import("./generate.ts"),
  "train-step": () => import("./train-step.ts"),
  train: () => import("./train.ts"),
};

async function runOne(name: string, args: readonly string[]): Promise<void> {
  const load = BENCHES[name];
  if (!load) throw new Error(`unknown bench "${name}"; available: ${Object.keys(BENCHES).join(", ")}`);
  console.log(`\n== bench ${name} ==`);
  await (await load()).main(args);
}

/**
 * All benches, each in a process of its own: a fresh device and fresh peers per bench.
 * In one process, a promise that a peer (TF.js on the previous bench's destroyed Dawn
 * device) leaves pending rejects with an AbortError during the next bench, and
 * TF.js-wasm's handler for unhandled rejections then kills the run.
 */
function runAll(args: readonly string[]): number {
  for (const name of Object.keys(BENCHES)) {
    const r = spawnSync(process.execPath, [...process.execArgv, fileURLToPath(import.meta.url), name, ...args], { stdio: "inherit" });
    if (r.status !== 0) return r.status ?? 1;
  }
  return 0;
}

async function run(): Promise<number> {
  const [first, ...rest] = process.argv.slice(2);
  if (first && !first.startsWith("-")) {
    await runOne(first, rest);
    return 0;
  }
  return runAll(process.argv.slice(2));
}

run()
  .then((code) => process.exit(code))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
