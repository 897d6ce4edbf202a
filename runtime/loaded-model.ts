import type { RunnablePlan } from "../lowering/plan.ts";
import { decodeSafetensors } from "../io/safetensors-format.ts";
import { numel, type Tensor } from "../compiler/tensor.ts";
import { createExecutor, type PlanExecutor } from "./executor.ts";
import { type Gpu, gpuFromDevice } from "./gpu.ts";
import { type DecodePlans, type GreedyOptions, PlannedDecoder } from "./planned-decoder.ts";
import { fetchBytes, type Platform } from "./platform.ts";

/**
 * A compiled model with its weights on a device, as a generated module (`dehvf compile
 * --emit ts`) uses it: plans travel as data, inputs and outputs are typed arrays checked
 * against the plan's names, dtypes and shapes. No platform module: it runs unchanged in
 * Node (Dawn) and in a browser (`navigator.gpu`).
 */

/** Host data for one tensor: f32 inputs as Float32Array (or numbers), i32 ones as Int32Array. */
export type HostArray = Float32Array | Int32Array | readonly number[];

/** A safetensors file: its bytes, or where to fetch it from. */
export type WeightsSource = Uint8Array | ArrayBuffer | string | URL;

/** One model's plans at one weight storage: its forward, and generation when it decodes. */
export interface PlanSet {
  readonly forward: RunnablePlan;
  readonly generation?: DecodePlans;
}

/** The plans of one model: f32 weights always; f16 weights where the adapter has shader-f16. */
export interface ModelPlans {
  readonly f32: PlanSet;
  readonly f16?: PlanSet;
}

export interface LoadOptions {
  /** false: f32 weights even where f16 ones could run (default: f16 where the device has shader-f16) */
  readonly f16?: boolean;
}

/** Thrown for inputs or weights that do not fit the compiled model. */
export class ModelInputError extends Error {
  override readonly name = "ModelInputError";
}

async function weightBytes(source: WeightsSource): Promise<Uint8Array> {
  if (source instanceof Uint8Array) return source;
  if (source instanceof ArrayBuffer) return new Uint8Array(source);
  try {
    return await fetchBytes(source);
  } catch (e) {
    throw new ModelInputError(`weights: ${(e as Error).message}`);
  }
}

export class LoadedModel {
  private constructor(
    readonly gpu: Gpu,
    readonly plan: RunnablePlan,
    private readonly ex: PlanExecutor,
    private readonly decoder: PlannedDecoder | undefined,
    /** opened by `open`: the device is this model's to free */
    private readonly ownsDevice: boolean,
  ) {}

  /**
   * Opens `plans` on `device` (a GPUDevice the caller owns, or a Gpu) with every weight the
   * plan reads from `weights`; the f16 plan where the device has shader-f16, one was
   * compiled and `opts.f16` is not false, else the f32 one.
   */
  static load(device: GPUDevice | Gpu, plans: ModelPlans, weights: WeightsSource, opts: LoadOptions = {}): Promise<LoadedModel> {
    return LoadedModel.create("info" in device ? device : gpuFromDevice(device), plans, weights, opts, false);
  }

  private static async create(gpu: Gpu, plans: ModelPlans, weights: WeightsSource, opts: LoadOptions, ownsDevice: boolean): Promise<LoadedModel> {
    const set = plans.f16 && gpu.hasF16 && opts.f16 !== false ? plans.f16 : plans.f32;
    const file = typeof weights === "string" || weights instanceof URL ? String(weights) : "weights";
    const tensors = decodeSafetensors(await weightBytes(weights), file);
    const params = new Map<string, Tensor>();
    const plan = set.forward;
    for (const p of [set.forward, set.generation?.prefill, set.generation?.decode].flatMap((q) => q?.params ?? [])) {
      const name = p.part?.of ?? p.name;
      if (params.has(name)) continue;
      const t = tensors.get(name);
      if (!t) throw new ModelInputError(`${file} has no tensor \`${name}\`, which ${plan.model} reads`);
      // a block of rows of a larger weight (PlanTensor.part) knows only its rows
      const fits = p.part ? t.shape.slice(1).join() === p.shape.slice(1).join() && t.shape[0] >= p.part.end : t.shape.join() === p.shape.join();
      if (!fits) throw new ModelInputError(`${file}: \`${name}\` has shape [${t.shape.join(", ")}], ${plan.model} expects [${p.shape.join(", ")}]`);
      const bad = t.data.findIndex((x) => !Number.isFinite(x));
      if (bad >= 0) throw new ModelInputError(`${file}: \`${name}\` holds ${t.data[bad]} at element ${bad}`);
      params.set(name, { shape: t.shape, data: Float64Array.from(t.data) });
    }
    // generation owns the weights; the forward borrows those it reads the same way
    const decoder = set.generation && (await PlannedDecoder.create(gpu, set.generation, params));
    try {
      const ex = await createExecutor(gpu, plan, undefined, undefined, decoder ? { shareWith: decoder.decoder } : {});
      try {
        ex.writeParams(params);
      } catch (e) {
        ex.destroy();
        throw e;
      }
      return new LoadedModel(gpu, plan, ex, decoder, ownsDevice);
    } catch (e) {
      decoder?.destroy();
      throw e;
    }
  }

  /**
   * Opens `plans` on the platform's device with the weights file at `weights` (a path in
   * Node, a URL in a browser): the same call in both. `destroy` then frees the device too.
   */
  static async open(platform: Platform, plans: ModelPlans, weights: string | URL, opts: LoadOptions = {}): Promise<LoadedModel> {
    const gpu = await platform.gpu();
    try {
      return await LoadedModel.create(gpu, plans, await platform.bytes(weights), opts, true);
    } catch (e) {
      gpu.destroy();
      throw e;
    }
  }

  /** How the frozen weights are stored on the device: "f16" where the f16 plans were chosen. */
  get weightStorage(): "f16" | "f32" {
    return this.plan.params.some((p) => p.dtype === "f16") ? "f16" : "f32";
  }

  /** The inputs the plan takes, with their dtypes and shapes at the compiled dims. */
  get inputs(): RunnablePlan["inputs"] {
    return this.plan.inputs;
  }

  /** One forward: every input by name; every output by name, as f32. */
  async run(inputs: Readonly<Record<string, HostArray>>): Promise<Record<string, Float32Array>> {
    const feed = new Map<string, Tensor>();
    for (const spec of this.plan.inputs) {
      const x = inputs[spec.name];
      if (!x) throw new ModelInputError(`${this.plan.model}: input \`${spec.name}\` [${spec.shape.join(", ")}] is missing`);
      if (x.length !== numel(spec.shape))
        throw new ModelInputError(
          `${this.plan.model}: input \`${spec.name}\` has ${x.length} values, its shape [${spec.shape.join(", ")}] needs ${numel(spec.shape)}`,
        );
      if (spec.dtype === "i32" && !(x instanceof Int32Array || Array.from(x).every(Number.isInteger)))
        throw new ModelInputError(`${this.plan.model}: input \`${spec.name}\` holds token ids: pass integers (an Int32Array)`);
      feed.set(spec.name, { shape: spec.shape, data: Float64Array.from(x) });
    }
    for (const name of Object.keys(inputs))
      if (!this.plan.inputs.some((i) => i.name === name))
        throw new ModelInputError(`${this.plan.model} has no input \`${name}\` (it takes ${this.plan.inputs.map((i) => i.name).join(", ")})`);
    const outs = await this.ex.run(feed);
    return Object.fromEntries(this.plan.outputs.map((o, i) => [o.name, Float32Array.from(outs[i].data)]));
  }

  /**
   * Greedy decoding with a KV cache (the plans' generation: a prefill of the prompt, then
   * one token per step): up to `maxTokens` ids after `prompt`, stopping after a `stop` id
   * (kept). `rest`: the model's other inputs for the prompt (an image). `prompt_mask`,
   * when the model takes one, marks the prompt but a leading `bos`, as in training.
   */
  greedy(prompt: readonly number[], rest: Readonly<Record<string, HostArray>>, opts: GreedyOptions): Promise<number[]> {
    if (!this.decoder) throw new ModelInputError(`${this.plan.model} was compiled without generation plans`);
    const prefill = new Map<string, Tensor>();
    for (const [name, x] of Object.entries(rest)) {
      const spec = this.plan.inputs.find((i) => i.name === name);
      if (!spec) throw new ModelInputError(`${this.plan.model} has no input \`${name}\``);
      prefill.set(name, { shape: spec.shape, data: Float64Array.from(x) });
    }
    return this.decoder.greedy(prompt, prefill, opts);
  }

  destroy(): void {
    this.ex.destroy();
    this.decoder?.destroy();
    if (this.ownsDevice) this.gpu.destroy();
  }
}
