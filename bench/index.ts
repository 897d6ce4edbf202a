/**
 * Benchmarks: `npm run bench` runs them all, `npm run bench -- NAME [args]` one.
 * Each entry is a module whose `main(argv)` prints its own table; add new ones to BENCHES.
 */
const BENCHES: Record<string, () => Promise<{ main(argv: readonly string[]): Promise<void> }>> = {
  matmul: () => import("./matmul.ts"),
  layer: () => import("./layer.ts"),
  "dehvf-vs-concat": () => import("./dehvf-vs-concat.ts"),
  fusion: () => import("./fusion.ts"),
};

async function run(): Promise<void> {
  const [first, ...rest] = process.argv.slice(2);
  const names = first && !first.startsWith("-") ? [first] : Object.keys(BENCHES);
  const args = first && !first.startsWith("-") ? rest : process.argv.slice(2);
  for (const name of names) {
    const load = BENCHES[name];
    if (!load) throw new Error(`unknown bench "${name}"; available: ${Object.keys(BENCHES).join(", ")}`);
    console.log(`\n== bench ${name} ==`);
    await (await load()).main(args);
  }
}

run()
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
