/**
 * Data flows one way, and so do imports: each folder imports only from folders listed
 * before it. util/ (errors, the seeded rng) at the bottom; the language front end; the
 * compiler (IR, passes, the scheduler); the lowering (kernels/ and lowering/: plans and
 * generated WGSL); the runtime, the only code that touches a device; data; generation,
 * evaluation and training; the command line on top. Type-only imports count too: a cycle
 * of types is a cycle of concepts. spec/, bench/ and scripts/ may import anything.
 */
import assert from "node:assert/strict";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { dirname, join, normalize, relative } from "node:path";
import { test } from "node:test";

const LAYERS = ["util", "io", "grammar", "compiler", "data", "kernels", "lowering", "bindings", "runtime", "generate", "eval", "train", "bin", "web"] as const;

function tsFiles(dir: string): string[] {
  return readdirSync(dir).flatMap((e) => {
    const p = join(dir, e);
    return statSync(p).isDirectory() ? tsFiles(p) : p.endsWith(".ts") ? [p] : [];
  });
}

/** The relative import specifiers of a source file, static and dynamic. */
function imports(source: string): string[] {
  return [...source.matchAll(/(?:\bfrom\s*|\bimport\s*\(\s*|^import\s+)["'](\.{1,2}\/[^"']+)["']/gm)].map((m) => m[1]);
}

test("every import points down the layers (util → io → grammar → compiler → data → kernels → lowering → bindings → runtime → generate → eval → train → bin → web)", () => {
  const layerOf = (file: string) => LAYERS.indexOf(file.split("/")[0] as (typeof LAYERS)[number]);
  const wrong: string[] = [];
  let checked = 0;
  for (const top of LAYERS)
    for (const file of tsFiles(top)) {
      for (const spec of imports(readFileSync(file, "utf8"))) {
        const target = relative(".", normalize(join(dirname(file), spec)));
        const [from, to] = [layerOf(file), layerOf(target)];
        checked++;
        if (to < 0) wrong.push(`${file} imports ${target}, outside the layered folders`);
        else if (to > from) wrong.push(`${file} (${LAYERS[from]}) imports ${target} (${LAYERS[to]}, above it)`);
      }
    }
  assert.ok(checked > 300, `only ${checked} imports found: is the pattern still right?`);
  assert.deepEqual(wrong, []);
});

test("the runtime core (dehvf/runtime) bundles for a browser: no platform module below it", async () => {
  const { build } = await import("esbuild");
  const r = await build({
    entryPoints: ["runtime/core.ts"],
    bundle: true,
    platform: "browser",
    format: "esm",
    write: false,
    metafile: true,
    logLevel: "silent",
  });
  const files = Object.keys(r.metafile.inputs);
  assert.ok(files.includes("runtime/executor.ts") && files.includes("runtime/loaded-model.ts"), files.join(", "));
  assert.deepEqual(
    files.filter((f) => f.startsWith("node_modules/") || f.startsWith("node:")),
    [],
  );
  // a Node-only import is refused there (the check itself can fail)
  await assert.rejects(
    build({ stdin: { contents: 'import "node:fs";', resolveDir: "." }, bundle: true, platform: "browser", write: false, logLevel: "silent" }),
    /node:fs/,
  );
});
