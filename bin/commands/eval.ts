import type { Command } from "commander";
import { acquireGpu } from "../../runtime/device.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { hostLimits } from "../../runtime/host-limits.ts";
import { checkWeightStorage, deviceLimits } from "../../runtime/webgpu-backend.ts";
import { Dataset } from "../../train/data.ts";
import { describeEval, describeSolutions, EvalModel } from "../../eval/task-eval.ts";
import { seqLength, groundedExamples } from "../../data/examples.ts";
import { nonNegativeInt, positiveInt, WEIGHTS_HELP, weightsOption } from "./load.ts";
import type { WeightStorage } from "../../lowering/plan.ts";
import { readTrainedWeights, trainedModel, trainedModelOptions } from "./trained.ts";

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
  weights?: WeightStorage;
}

export function registerEval(program: Command): void {
  trainedModelOptions(program.command("eval"), "evaluate")
    .description("evaluate trained weights on the held-out split: multiple-choice accuracy per question type and caption BLEU-4 / CIDEr-D, by greedy decoding")
    .option("--batch <n>", "rows per forward", positiveInt, 64)
    .option("--problems <n>", "at most this many problems", nonNegativeInt, 2000)
    .option("--captions <n>", "at most this many caption images", nonNegativeInt, 100)
    .option("--weights <f16|f32>", `${WEIGHTS_HELP} (default: the stage's \`weights\`)`, weightsOption)
    .option("--strict", "exit with an error, evaluating nothing, when the weights hold NaN or infinite values (default: a loud warning)")
    .action(async (file: string, opts: EvalOptions) => {
      const say = (line: string) => process.stdout.write(`${line}\n`);
      const trained = trainedModel(file, opts);
      const { modelName, model, weights, stage } = trained;
      const dataset = await Dataset.open(opts.data, say, [opts.split], { cocoRoot: opts.cocoRoot });
      // the data as the stage trained on it: the model's image form and tokenizer, the section's prompt format
      const { data } = await dataset.forStage(model, stage);
      // room for the longest prompt + reference answer of the evaluated split itself
      const T = stage.task === "classify" ? undefined : seqLength(groundedExamples(data.tokenizer!, data.splits[opts.split]!, data.format));
      const dims: Record<string, number> = T ? { B: opts.batch, T } : { B: opts.batch };
      const gpu = await acquireGpu();
      try {
        checkSizes(model, dims, { host: hostLimits(), device: deviceLimits(gpu) });
        const { tensors, meta } = await readTrainedWeights(trained, opts.strict ?? false);
        const storage = opts.weights ?? stage.weights;
        checkWeightStorage(gpu, storage, "--weights");
        const ev = await EvalModel.create(say, gpu, model, stage.task, data, tensors, opts.batch, storage);
        say(`${modelName} from ${weights} (stage ${meta.stage ?? "?"}, step ${meta.step ?? "?"})`);
        const t0 = performance.now();
        const r = await ev.evaluateSaying(say, data, opts.split, { problems: opts.problems, captions: opts.captions });
        say(describeEval(r));
        const solutions = describeSolutions(r);
        if (solutions) say(solutions);
        for (const s of (r.samples ?? []) as { question: string; generated: string; answer: string }[])
          say(`  ${s.question} → ${s.generated} (truth: ${s.answer})`);
        say(`evaluated in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
        ev.destroy();
      } finally {
        gpu.destroy();
      }
    });
}
