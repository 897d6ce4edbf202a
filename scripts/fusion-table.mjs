#!/usr/bin/env node
// The README's fusion table: trains DEHVF, MemVP and concat (models/tiny-vqa.dehvf) for each
// seed on the same shipped backbones (`--last-seed N`: the fine-tuning's seed, into sibling
// run directories; `--reuse models/tiny-vqa.backbones`), then prints mean ± std over the
// seeds of the held-out accuracy per question type, captions and ms/step, read back from
// each run's eval.json.
//   node scripts/fusion-table.mjs [--seeds 0,1,2] [--out runs] [--print-only]
import { spawnSync } from "node:child_process";
import { existsSync, readFileSync } from "node:fs";
import { join } from "node:path";

const arg = (name, def) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
};
const seeds = arg("--seeds", "0,1,2").split(",").map(Number);
const out = arg("--out", "runs");
const printOnly = process.argv.includes("--print-only");
const MODELS = [
  ["DEHVF", "TinyVQA"],
  ["MemVP", "TinyVQAMemVP"],
  ["concat", "TinyVQAConcat"],
];

const dir = (model, seed) => join(out, `finetune-${model}${seed === 0 ? "" : `-seed${seed}`}`);

if (!printOnly)
  for (const seed of seeds)
    for (const [, model] of MODELS) {
      const r = spawnSync(
        process.execPath,
        ["bin/dehvf.js", "train", "models/tiny-vqa.dehvf", "-m", model, "--last-seed", String(seed), "--reuse", "models/tiny-vqa.backbones", "--out", out],
        { stdio: "inherit" },
      );
      if (r.status !== 0) process.exit(r.status ?? 1);
    }

const mean = (xs) => xs.reduce((a, x) => a + x, 0) / xs.length;
const std = (xs) => (xs.length > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean(xs)) ** 2, 0) / (xs.length - 1)) : 0);
const cell = (xs, pct = true, d = 1) => {
  const k = pct ? 100 : 1;
  return `${(mean(xs) * k).toFixed(d)} ± ${(std(xs) * k).toFixed(d)}`;
};

const rows = [];
let types;
let chance;
for (const [name, model] of MODELS) {
  const evals = seeds
    .map((s) => dir(model, s))
    .filter((d) => existsSync(join(d, "eval.json")))
    .map((d) => JSON.parse(readFileSync(join(d, "eval.json"), "utf8")));
  if (!evals.length) continue;
  types ??= Object.keys(evals[0].per_type);
  chance ??= evals[0].chance;
  rows.push(
    `| ${name} (\`${model}\`) | ${evals[0].trainable.toLocaleString("en-US")} | ${evals.length} | **${cell(evals.map((e) => e.accuracy))}** | ${types.map((t) => cell(evals.map((e) => e.per_type[t]))).join(" | ")} | ${cell(
      evals.map((e) => e.bleu4),
      false,
      3,
    )} | ${cell(
      evals.map((e) => e.cider_d),
      false,
      3,
    )} | ${cell(
      evals.map((e) => e.ms_per_step),
      false,
      0,
    )} |`,
  );
}
if (!rows.length) {
  console.error(`no eval.json under ${out}/finetune-*`);
  process.exit(1);
}
console.log(`| fusion | trainable | seeds | test accuracy (%) | ${types.join(" | ")} | BLEU-4 | CIDEr-D | ms/step |`);
console.log(`|---|---|---|---|${types.map(() => "---").join("|")}|---|---|---|`);
for (const r of rows) console.log(r);
console.log(`\nchance: ${(chance * 100).toFixed(1)}% overall`);
