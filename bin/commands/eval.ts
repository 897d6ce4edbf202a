import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { elaborate } from "../../compiler/elaborate.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";
import { acquireGpu } from "../../runtime/device.ts";
import { readChecked, STAGE_FILES } from "../../train/checkpoint.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { hostLimits } from "../../runtime/host-limits.ts";
import { deviceLimits } from "../../runtime/webgpu-backend.ts";
import { storedParams } from "../../io/checkpoints/load.ts";
import { Dataset } from "../../train/data.ts";
import { describeEval, EvalModel } from "../../eval/task-eval.ts";
import { stagesFor, trainStages } from "../../train/stages.ts";
import { seqLength, groundedExamples } from "../../train/tasks.ts";
import { nonNegativeInt, positiveInt } from "./load.ts";

interface EvalOptions {
  model?: string;
  checkpoint: string;
  data?: string;
  cocoRoot?: string;
  split: "val" | "test";
  batch: number;
  problems: number;
  captions: number;
  strict?: boolean;
}

export function registerEval(program: Command): void {
  program
    .command("eval")
    .description("evaluate trained weights on the held-out split: multiple-choice accuracy per question type and caption BLEU-4 / CIDEr-D, by greedy decoding")
    .argument("<file>", ".dehvf model file")
    .requiredOption("--checkpoint <path>", "a stage directory from `dehvf train` (its final.safetensors) or a .safetensors file")
    .option("-m, --model <name>", "model to evaluate (default: the file's first model)")
    .option("--data <dir>", "dataset directory: ScienceQA and/or COCO-Karpathy files, as for train (default: the built-in Fashion-MNIST one)")
    .option("--coco-root <dir>", "where dataset_coco.json's filepath/filename are relative to (default: the --data directory)")
    .option("--split <name>", "val or test", "test")
    .option("--batch <n>", "rows per forward", positiveInt, 64)
    .option("--problems <n>", "at most this many problems", nonNegativeInt, 2000)
    .option("--captions <n>", "at most this many caption images", nonNegativeInt, 100)
    .option("--strict", "exit with an error, evaluating nothing, when the weights hold NaN or infinite values (default: a loud warning)")
    .action(async (file: string, opts: EvalOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      if (opts.split !== "val" && opts.split !== "test") throw new UserError(`--split must be val or test, got ${opts.split}`);
      const program = loadProgram(file);
      const modelName = opts.model ?? program.entry.decls.find((d) => d.kind === "model")?.name.name;
      if (!modelName) throw new UserError(`${file} declares no model`);
      const model = elaborate(program, modelName);
      const weights = existsSync(opts.checkpoint) && statSync(opts.checkpoint).isDirectory() ? join(opts.checkpoint, STAGE_FILES.final) : opts.checkpoint;
      if (!existsSync(weights)) throw new UserError(`no weights at ${weights} (train first: dehvf train ${file} -m ${modelName})`);
      const stage = stagesFor(trainStages(program), modelName).at(-1)!;
      const dataset = await Dataset.open(opts.data, say, [opts.split], { cocoRoot: opts.cocoRoot });
      // the data as the stage trained on it: the model's image form and tokenizer, the section's prompt format
      const { data } = await dataset.forStage(model, stage);
      // room for the longest prompt + reference answer of the evaluated split itself
      const T = stage.task === "classify" ? undefined : seqLength(groundedExamples(data.tokenizer!, data.splits[opts.split]!, data.format));
      const dims: Record<string, number> = T ? { B: opts.batch, T } : { B: opts.batch };
      const gpu = await acquireGpu();
      try {
        checkSizes(model, dims, { host: hostLimits(), device: deviceLimits(gpu) });
        const { tensors, meta, nonFinite } = await readChecked(weights, { expected: storedParams(model.params), anyFloat: true, nonFinite: "report" });
        if (nonFinite.length) {
          const which = nonFinite.slice(0, 3).map((t) => `${t.name}: ${t.count.toLocaleString("en-US")} of ${t.size.toLocaleString("en-US")}`).join(", ");
          const what = `${weights}: ${nonFinite.length} tensor${nonFinite.length === 1 ? "" : "s"} hold NaN or infinite values (${which}${nonFinite.length > 3 ? ", …" : ""})`;
          if (opts.strict) throw new UserError(`${what}; nothing evaluated (--strict)`);
          process.stderr.write(`\n*** WARNING: ${what}.\n*** The model's outputs are not numbers: every result below is meaningless. (--strict makes this an error.)\n\n`);
        }
        const ev = await EvalModel.create(say, gpu, model, stage.task, data, tensors, opts.batch);
        say(`${modelName} from ${weights} (stage ${meta.stage ?? "?"}, step ${meta.step ?? "?"})`);
        const t0 = performance.now();
        const r = await ev.evaluateSaying(say, data, opts.split, { problems: opts.problems, captions: opts.captions });
        say(describeEval(r));
        for (const s of (r.samples ?? []) as { question: string; generated: string; answer: string }[]) say(`  ${s.question} → ${s.generated} (truth: ${s.answer})`);
        say(`evaluated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        ev.destroy();
      } finally {
        gpu.destroy();
      }
    });
}
