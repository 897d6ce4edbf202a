import type { Command } from "commander";
import { announcedCompile } from "../../runtime/compile-progress.ts";
import { CONTEXT_DIM } from "../../compiler/decoding.ts";
import { generationModels } from "../../compiler/generation-models.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { type Tensor, tensor } from "../../compiler/tensor.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { loadProgram } from "../../grammar/modules.ts";
import { generate } from "../../generate/generate.ts";
import { promptIds, stopIds } from "../../generate/prompt.ts";
import { modelImage } from "../../generate/image-input.ts";
import { resolveTokenizer } from "../../generate/model-tokenizer.ts";
import { DeviceDecoder, InterpDecoder, type StepModel } from "../../runtime/decoder.ts";
import { acquireGpu, type Gpu } from "../../runtime/device.ts";
import { hostLimits } from "../../runtime/host-limits.ts";
import { initAllParams, loadAllParams } from "../../runtime/interp-backend.ts";
import { deviceLimits, inferenceWeights } from "../../runtime/webgpu-backend.ts";
import { loadTrainedWeights } from "../../train/checkpoint.ts";
import { nonNegativeInt, numberOption, positiveInt, WEIGHTS_HELP, weightsOption } from "./load.ts";
import type { WeightStorage } from "../../lowering/plan.ts";

interface GenerateOptions {
  model?: string;
  checkpoint?: string;
  tokenizer?: string;
  prompt: string;
  image?: string;
  maxTokens: number;
  temperature: number;
  topK: number;
  topP: number;
  seed: number;
  context?: number;
  backend: string;
  weights?: WeightStorage;
}

export function registerGenerate(program: Command): void {
  program
    .command("generate")
    .description(
      "generate text from a prompt (and an image, for vision-language models): the prompt runs once, then each token is one step with a KV cache; only the text goes to stdout",
    )
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model (default: the file's first model)")
    .option("--checkpoint <path>", "trained weights: a stage directory from `dehvf train` or a .safetensors file")
    .option("--tokenizer <path>", "tokenizer.json (or its directory) or a llama2.c tokenizer.bin (default: the model file's `tokenizer`)")
    .option("--prompt <text>", "the text to continue (empty: start from BOS)", "")
    .option("--image <path>", "the image, for a model that takes one")
    .option("--max-tokens <n>", "new tokens at most", positiveInt, 256)
    .option("--temperature <t>", "0: greedy; otherwise sample from softmax(logits / t)", numberOption(0), 0)
    .option("--top-k <k>", "sample among the k most likely tokens (0: all)", nonNegativeInt, 0)
    .option("--top-p <p>", "sample among the most likely tokens that reach probability p", numberOption(0, 1), 1)
    .option("--seed <n>", "seed of the sampling", nonNegativeInt, 0)
    .option("--context <n>", "KV cache length (default: the prompt plus --max-tokens)", positiveInt)
    .option("--backend <name>", "webgpu (generated WGSL on Dawn) or interp (float64 reference interpreter)", "webgpu")
    .option("--weights <f16|f32>", `${WEIGHTS_HELP} (default: f16 for weights from a checkpoint where the adapter has shader-f16, else f32)`, weightsOption)
    .action(async (file: string, opts: GenerateOptions) => {
      if (opts.backend !== "webgpu" && opts.backend !== "interp") throw new UserError(`--backend must be webgpu or interp, got "${opts.backend}"`);
      // stdout carries the generated text only
      const note = (line: string) => process.stderr.write(`${line}\n`);
      const program = loadProgram(file);
      const models = generationModels(program, opts.model);
      const tok = await resolveTokenizer(models.decode, opts.tokenizer);
      const prompt = promptIds(tok, opts.prompt);
      const extra = new Map<string, Tensor>();
      const image = models.prefill.inputs.find((i) => i.name === "image");
      if (image) {
        if (!opts.image) throw new UserError(`model \`${models.prefill.name}\` takes an image: pass --image PATH`);
        extra.set("image", await modelImage(models.prefill, opts.image));
      } else if (opts.image) throw new UserError(`model \`${models.prefill.name}\` takes no image, but --image was given`);
      if (models.prefill.inputs.some((i) => i.name === "prompt_mask"))
        extra.set(
          "prompt_mask",
          // the prompt's own tokens, not BOS, as in training and evaluation (data/batches.ts)
          tensor(
            [1, prompt.length],
            Array.from(prompt, (id, i) => (i === 0 && id === tok.special.bos ? 0 : 1)),
          ),
        );

      // checkpoint weights stream to the device as float32; the interpreter reads them as float64
      const params = opts.backend === "interp" ? await loadAllParams(models.decode, 0) : initAllParams(models.decode, 0);
      if (opts.checkpoint) for (const [k, v] of await loadTrainedWeights(opts.checkpoint, models.decode)) params.set(k, v);
      const dims = (T: number, C: number) => ({ [models.batchDim]: 1, [models.seqDim]: T, [CONTEXT_DIM]: C });
      const span = prompt.length + models.prefixLength(dims(prompt.length, 1));
      const context = opts.context ?? span + opts.maxTokens;
      let gpu: Gpu | undefined;
      let model: StepModel;
      if (opts.backend === "webgpu") {
        gpu = await acquireGpu();
        checkSizes(models.prefill, dims(prompt.length, context), { host: hostLimits(), device: deviceLimits(gpu) });
        model = await DeviceDecoder.create(
          gpu,
          models,
          params,
          { batch: 1, context, weights: inferenceWeights(gpu, models.decode.params, opts.weights, note) },
          announcedCompile(note, (n) => `compiling the decode step's ${n} pipelines`),
        );
      } else {
        checkSizes(models.prefill, dims(prompt.length, context), { host: hostLimits(), interp: true });
        model = new InterpDecoder(models, params, { batch: 1, context });
      }
      try {
        const text = tok.streamDecoder({ after: prompt });
        for await (const id of generate(
          model,
          prompt,
          { maxTokens: opts.maxTokens, temperature: opts.temperature, topK: opts.topK, topP: opts.topP, seed: opts.seed, stop: stopIds(tok) },
          extra,
        ))
          process.stdout.write(text.push(id));
        process.stdout.write(`${text.flush()}\n`);
      } finally {
        model.destroy();
        gpu?.destroy();
      }
    });
}
