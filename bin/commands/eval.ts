import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { elaborate } from "../../compiler/elaborate.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";
import { Predictor } from "../../eval/evaluate.ts";
import { acquireGpu } from "../../runtime/device.ts";
import { loadTensors, STAGE_FILES } from "../../train/checkpoint.ts";
import { prepareData } from "../../train/data.ts";
import { describeEval, evaluateTask } from "../../train/run-stage.ts";
import { stagesFor, trainStages } from "../../train/stages.ts";
import { seqLength, groundedExamples } from "../../train/tasks.ts";
import { intOption } from "./load.ts";

interface EvalOptions {
  model?: string;
  checkpoint: string;
  data?: string;
  split: "val" | "test";
  batch: number;
  problems: number;
  captions: number;
}

export function registerEval(program: Command): void {
  program
    .command("eval")
    .description("evaluate trained weights on the held-out split: multiple-choice accuracy per question type and caption BLEU-4 / CIDEr-D, by greedy decoding")
    .argument("<file>", ".dehvf model file")
    .requiredOption("--checkpoint <path>", "a stage directory from `dehvf train` (its final.safetensors) or a .safetensors file")
    .option("-m, --model <name>", "model to evaluate (default: the file's first model)")
    .option("--data <dir>", "dataset directory (default: the built-in Fashion-MNIST one)")
    .option("--split <name>", "val or test", "test")
    .option("--batch <n>", "rows per forward", intOption("batch"), 64)
    .option("--problems <n>", "at most this many problems", intOption("problems"), 2000)
    .option("--captions <n>", "at most this many caption images", intOption("captions"), 100)
    .action(async (file: string, opts: EvalOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      if (opts.split !== "val" && opts.split !== "test") throw new UserError(`--split must be val or test, got ${opts.split}`);
      const program = loadProgram(file);
      const modelName = opts.model ?? program.entry.decls.find((d) => d.kind === "model")?.name.name;
      if (!modelName) throw new UserError(`${file} declares no model`);
      const model = elaborate(program, modelName);
      const weights = existsSync(opts.checkpoint) && statSync(opts.checkpoint).isDirectory() ? join(opts.checkpoint, STAGE_FILES.final) : opts.checkpoint;
      if (!existsSync(weights)) throw new UserError(`no weights at ${weights} (train first: dehvf train ${file} -m ${modelName})`);
      const { tensors, meta } = await loadTensors(weights);
      const missing = model.params.filter((p) => !tensors.has(p.name)).map((p) => p.name);
      if (missing.length) throw new UserError(`${weights} lacks ${missing.length} parameters of ${modelName} (e.g. ${missing.slice(0, 3).join(", ")}); was it trained for another model?`);
      const stage = stagesFor(trainStages(program), modelName).at(-1)!;
      const data = await prepareData(opts.data, say, [opts.split]);
      const gpu = await acquireGpu();
      try {
        // room for the longest prompt + reference answer of the evaluated split itself
        const T = stage.task === "classify" ? undefined : seqLength(groundedExamples(data.tokenizer!, data.splits[opts.split]!));
        const p = await Predictor.create(gpu, model, T ? { B: opts.batch, T } : { B: opts.batch }, tensors);
        say(`${modelName} from ${weights} (stage ${meta.stage ?? "?"}, step ${meta.step ?? "?"})`);
        const t0 = performance.now();
        const r = await evaluateTask(stage.task, p, data, opts.split, { problems: opts.problems, captions: opts.captions });
        say(describeEval(r));
        for (const s of (r.samples ?? []) as { question: string; generated: string; answer: string }[]) say(`  ${s.question} → ${s.generated} (truth: ${s.answer})`);
        say(`evaluated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        p.destroy();
      } finally {
        gpu.destroy();
      }
    });
}
