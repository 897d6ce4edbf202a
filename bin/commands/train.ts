import { existsSync, statSync } from "node:fs";
import type { Command } from "commander";
import { loadProgram } from "../../grammar/modules.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { autotuneRequested } from "../../runtime/autotune.ts";
import { acquireGpu } from "../../runtime/device.ts";
import { checkSameTokens, Dataset, type StageData } from "../../train/data.ts";
import { runStage, type StageResult } from "../../train/run-stage.ts";
import { elaborate } from "../../compiler/elaborate.ts";
import { acquireRunLock } from "../../io/run-lock.ts";
import { stagesFor, trainStages } from "../../train/stages.ts";
import type { WeightStorage } from "../../lowering/plan.ts";
import { nonNegativeInt, positiveInt, WEIGHTS_HELP, weightsOption } from "./load.ts";

interface TrainOptions {
  model?: string;
  data?: string;
  cocoRoot?: string;
  steps?: number;
  seed?: number;
  weights?: WeightStorage;
  lastSeed?: number;
  reuse: string[];
  out: string;
  resume?: boolean;
  evalProblems: number;
  evalCaptions: number;
  autotune?: boolean;
}

export function registerTrain(program: Command): void {
  program
    .command("train")
    .description(
      "train a model through the stages its file's `train` sections declare (backbones first, reused when already trained), then evaluate on the held-out split",
    )
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to fine-tune (default: the file's first model)")
    .option(
      "--data <dir>",
      "dataset directory: ScienceQA's problems.json + pid_splits.json + images/, COCO-Karpathy's dataset_coco.json, or both; default: build the Fashion-MNIST one in out/data/fashion",
    )
    .option("--coco-root <dir>", "where dataset_coco.json's filepath/filename are relative to (default: the --data directory)")
    .option("--steps <n>", "steps of the last stage (overrides its `steps`)", positiveInt)
    .option(
      "--seed <n>",
      "every stage's `seed` (parameter init, data order, dropout); a seed other than a section's own trains into its own directory, e.g. runs/finetune-TinyVQA-seed1",
      nonNegativeInt,
    )
    .option(
      "--last-seed <n>",
      "the last stage's `seed` only: its backbones keep their sections' own (repeat a fine-tuning on the same backbones); trains into e.g. runs/finetune-TinyVQA-seed1",
      nonNegativeInt,
    )
    .option("--out <dir>", "where stage directories (checkpoints, metrics, plots) go", "runs")
    .option(
      "--reuse <dir>",
      "also take finished stages from this directory of stage directories (e.g. shipped backbones), where made from exactly the same (train section, model, data, backbones, seed); they are copied into --out. Repeatable",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option("--resume", "continue each unfinished stage from its last checkpoint")
    .option("--eval-problems <n>", "held-out problems to evaluate", nonNegativeInt, 2000)
    .option("--eval-captions <n>", "held-out caption images to evaluate", nonNegativeInt, 100)
    .option(
      "--weights <f16|f32>",
      `${WEIGHTS_HELP}, in the last stage's training and evaluation (overrides its \`weights\`; another value than the section's trains into e.g. runs/finetune-TinyVQA-f16)`,
      weightsOption,
    )
    .option("--autotune", "time candidate matmul kernels of each training step on this device first (cached per adapter; also DEHVF_AUTOTUNE=1)")
    .action(async (file: string, opts: TrainOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      const program = loadProgram(file);
      const modelName = opts.model ?? program.entry.decls.find((d) => d.kind === "model")?.name.name;
      if (!modelName) throw new UserError(`${file} declares no model`);
      if (opts.seed !== undefined && opts.lastSeed !== undefined)
        throw new UserError("--seed sets every stage's seed and --last-seed the last stage's: give one of them");
      for (const dir of opts.reuse) if (!existsSync(dir) || !statSync(dir).isDirectory()) throw new UserError(`--reuse ${dir}: no such directory`);
      const stages = stagesFor(trainStages(program), modelName);
      say(`stages: ${stages.map((s) => `${s.name}${s.model ? ` (${s.model})` : ` (${modelName})`}`).join(" → ")}`);
      const lock = acquireRunLock(opts.out, `dehvf train ${process.argv.slice(3).join(" ")}`);
      if (lock.tookOver) say(`${opts.out}: took over the lock of an earlier run (${lock.tookOver})`);
      try {
        const t0 = performance.now();
        const dataset = await Dataset.open(opts.data, say, undefined, { cocoRoot: opts.cocoRoot });
        // each stage sees the data as its model reads it (image form, tokenizer) and its section words it (prompt)
        const stageData = new Map<string, StageData>();
        for (const stage of stages) {
          const d = await dataset.forStage(elaborate(program, stage.model ?? modelName), stage);
          checkSameTokens(
            stage.name,
            d,
            stage.backbones.map((b) => ({ stage: b, data: stageData.get(b)! })),
          );
          stageData.set(stage.name, d);
        }
        const gpu = await acquireGpu();
        say(`device: ${gpu.info.description || gpu.info.vendor}`);
        try {
          const done = new Map<string, StageResult>();
          for (const [i, stage] of stages.entries()) {
            const last = i === stages.length - 1;
            const { data, digest } = stageData.get(stage.name)!;
            const ctx = {
              gpu,
              program,
              data,
              dataDigest: digest,
              out: opts.out,
              resume: Boolean(opts.resume),
              say,
              evalProblems: opts.evalProblems,
              evalCaptions: opts.evalCaptions,
              autotune: autotuneRequested(opts.autotune),
              reuseFrom: opts.reuse,
            };
            // stagesFor puts every backbone before the stages that use it
            const backbones = stage.backbones.map((b) => done.get(b)!);
            done.set(
              stage.name,
              await runStage(ctx, stage, modelName, backbones, {
                steps: last ? opts.steps : undefined,
                seed: last ? (opts.lastSeed ?? opts.seed) : opts.seed,
                weights: last ? opts.weights : undefined,
              }),
            );
          }
          say(`total ${((performance.now() - t0) / 60000).toFixed(1)} min; results in ${[...done.values()].map((r) => r.dir).join(", ")}`);
        } finally {
          gpu.destroy();
        }
      } finally {
        lock.release();
      }
    });
}
