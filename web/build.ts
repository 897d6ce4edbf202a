import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { build } from "esbuild";
import { emitTs } from "../bin/commands/emit-ts.ts";
import { promptFormat } from "../data/prompts.ts";
import type { Problem } from "../data/scienceqa.ts";
import { loadProgram } from "../grammar/modules.ts";
import { UserError } from "../grammar/diagnostics.ts";
import { trainStages } from "../train/stages.ts";

/**
 * The static site `npm run web` serves: the generated module of TinyVQA (with the router
 * taps) and its weights, the page bundled for the browser, the word-level tokenizer and a
 * few held-out test examples (images and questions) from the dataset.
 */

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "..");
export const MODEL_FILE = "models/tiny-vqa.dehvf";
export const DEFAULT_CHECKPOINT = "runs/finetune-TinyVQA";
export const DEFAULT_DATA = "out/data/fashion";

export interface SiteOptions {
  readonly out: string;
  /** trained weights (a stage directory or .safetensors); undefined: the model's own (untrained fusion) */
  readonly checkpoint?: string;
  /** the dataset directory its examples and tokenizer come from */
  readonly data: string;
  /** held-out examples per question type */
  readonly perType: number;
  /** the compiled window (prompt and answer) */
  readonly seq: number;
}

export interface Site {
  readonly out: string;
  readonly examples: number;
  readonly checkpoint?: string;
}

/** Held-out test problems, the first `perType` of each question type, with the prompt the fine-tuning stage uses. */
function exportExamples(data: string, out: string, perType: number): number {
  const problems = JSON.parse(readFileSync(join(data, "problems.json"), "utf8")) as Record<string, Problem>;
  const splits = JSON.parse(readFileSync(join(data, "pid_splits.json"), "utf8")) as Record<string, string[]>;
  const finetune = trainStages(loadProgram(MODEL_FILE)).find((s) => s.model === undefined);
  const format = promptFormat(finetune?.prompt, finetune?.answer);
  const taken = new Map<string, number>();
  const examples = [];
  mkdirSync(join(out, "examples"), { recursive: true });
  for (const pid of splits.test ?? []) {
    const p = problems[pid];
    if (!p?.image || (taken.get(p.category) ?? 0) >= perType) continue;
    taken.set(p.category, (taken.get(p.category) ?? 0) + 1);
    const image = `examples/${pid}.png`;
    copyFileSync(join(data, "images", pid, p.image), join(out, image));
    examples.push({ pid, image, category: p.category, question: p.question, prompt: format.parts(p).prompt, answer: format.answer(p, p.answer) });
  }
  writeFileSync(join(out, "examples.json"), JSON.stringify(examples, null, 1));
  return examples.length;
}

export async function buildSite(o: SiteOptions): Promise<Site> {
  for (const f of ["tokenizer.json", "tokenizer_config.json", "problems.json"])
    if (!existsSync(join(o.data, f)))
      throw new UserError(`${join(o.data, f)} is missing: build the dataset first (\`npm run train\` does, or \`npx tsx data/build.ts\`)`);
  mkdirSync(o.out, { recursive: true });
  await emitTs(MODEL_FILE, {
    out: join(o.out, "gen"),
    taps: ["dehvf.alpha"],
    checkpoint: o.checkpoint,
    dims: { batch: 1, seq: o.seq },
    command: `dehvf compile ${MODEL_FILE} --emit ts -o ${join(o.out, "gen")} --tap dehvf.alpha --seq ${o.seq}${o.checkpoint ? ` --checkpoint ${o.checkpoint}` : ""}`,
  });
  for (const f of ["tokenizer.json", "tokenizer_config.json"]) copyFileSync(join(o.data, f), join(o.out, f));
  const examples = exportExamples(o.data, o.out, o.perType);
  copyFileSync(join(ROOT, "web/index.html"), join(o.out, "index.html"));
  const out = resolve(o.out);
  await build({
    stdin: {
      contents: [
        'import { dims, imageForm, TinyVQA } from "./gen/TinyVQA.ts";',
        `import { start } from ${JSON.stringify(join(ROOT, "web/page.ts"))};`,
        "void start({ dims, imageForm, load: (device, weights) => TinyVQA.load(device, weights) });",
      ].join("\n"),
      resolveDir: out,
      loader: "ts",
    },
    alias: { "dehvf/runtime": join(ROOT, "runtime/core.ts") },
    bundle: true,
    platform: "browser",
    format: "esm",
    target: "es2022",
    outfile: join(out, "page.js"),
    logLevel: "error",
  });
  return { out: o.out, examples, checkpoint: o.checkpoint };
}
