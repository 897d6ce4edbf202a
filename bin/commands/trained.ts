import { existsSync, statSync } from "node:fs";
import { join } from "node:path";
import type { Command } from "commander";
import { type CompiledModel, elaborate } from "../../compiler/elaborate.ts";
import type { Tensor } from "../../compiler/tensor.ts";
import { UserError } from "../../grammar/diagnostics.ts";
import { loadProgram, type Program } from "../../grammar/modules.ts";
import { storedParams } from "../../io/checkpoints/load.ts";
import { readChecked, STAGE_FILES } from "../../train/checkpoint.ts";
import { type StageConfig, stagesFor, trainStages } from "../../train/stages.ts";

/** A trained model as `dehvf eval` and `dehvf inspect` take it. */
export interface Trained {
  readonly program: Program;
  readonly modelName: string;
  readonly model: CompiledModel;
  /** the weights file: --checkpoint itself, or a stage directory's final.safetensors */
  readonly weights: string;
  /** the stage that trains the model: its task, and how its data are worded */
  readonly stage: StageConfig;
}

/** The arguments of a command on a trained model: FILE, --checkpoint, -m, --data, --coco-root, --split. */
export function trainedModelOptions(cmd: Command, verb: string): Command {
  return cmd
    .argument("<file>", ".dehvf model file")
    .requiredOption("--checkpoint <path>", "a stage directory from `dehvf train` (its final.safetensors) or a .safetensors file")
    .option("-m, --model <name>", `model to ${verb} (default: the file's first model)`)
    .option("--data <dir>", "dataset directory: ScienceQA and/or COCO-Karpathy files, as for train (default: the built-in Fashion-MNIST one)")
    .option("--coco-root <dir>", "where dataset_coco.json's filepath/filename are relative to (default: the --data directory)")
    .option("--split <name>", "val or test", "test");
}

/**
 * FILE's model (-m, default the first), the weights --checkpoint names and the stage that
 * trained them. `check` sees the model before anything is read from disk (e.g. to refuse a
 * model the command cannot use).
 */
export function trainedModel(
  file: string,
  opts: { readonly model?: string; readonly checkpoint: string; readonly split: string },
  check?: (model: CompiledModel) => void,
): Trained {
  if (opts.split !== "val" && opts.split !== "test") throw new UserError(`--split must be val or test, got ${opts.split}`);
  const program = loadProgram(file);
  const modelName = opts.model ?? program.entry.decls.find((d) => d.kind === "model")?.name.name;
  if (!modelName) throw new UserError(`${file} declares no model`);
  const model = elaborate(program, modelName);
  check?.(model);
  const weights = existsSync(opts.checkpoint) && statSync(opts.checkpoint).isDirectory() ? join(opts.checkpoint, STAGE_FILES.final) : opts.checkpoint;
  if (!existsSync(weights)) throw new UserError(`no weights at ${weights} (train first: dehvf train ${file} -m ${modelName})`);
  return { program, modelName, model, weights, stage: stagesFor(trainStages(program), modelName).at(-1)! };
}

/**
 * The trained weights, checked (names, shapes, digest). Weights holding NaN or infinite values
 * are an error with `strict`, else a loud warning: every result computed from them is meaningless.
 */
export async function readTrainedWeights(t: Trained, strict: boolean): Promise<{ tensors: Map<string, Tensor>; meta: Record<string, string> }> {
  const { tensors, meta, nonFinite } = await readChecked(t.weights, { expected: storedParams(t.model.params), anyFloat: true, nonFinite: "report" });
  if (nonFinite.length) {
    const which = nonFinite
      .slice(0, 3)
      .map((n) => `${n.name}: ${n.count.toLocaleString("en-US")} of ${n.size.toLocaleString("en-US")}`)
      .join(", ");
    const what = `${t.weights}: ${nonFinite.length} tensor${nonFinite.length === 1 ? "" : "s"} hold NaN or infinite values (${which}${nonFinite.length > 3 ? ", …" : ""})`;
    if (strict) throw new UserError(`${what}; nothing evaluated (--strict)`);
    process.stderr.write(
      `\n*** WARNING: ${what}.\n*** The model's outputs are not numbers: every result below is meaningless. (--strict makes this an error.)\n\n`,
    );
  }
  return { tensors, meta };
}
