import { CACHE_POS, CONTEXT_DIM } from "../compiler/decoding.ts";
import { shapeEval } from "../compiler/dims.ts";
import type { CompiledModel } from "../compiler/elaborate.ts";
import type { GenerationModels } from "../compiler/generation-models.ts";
import { interpret } from "../compiler/interpret.ts";
import { buildPlan, type WeightStorage } from "../lowering/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { Gpu } from "./device.ts";
import { type CompileHook, createExecutor, type PlanExecutor } from "./executor.ts";
import { uploadParams } from "./param-upload.ts";
import { stateCopies } from "./planned-decoder.ts";
import { planTarget } from "./webgpu-backend.ts";

/**
 * One model stepping through a generation: a prefill of the prompt batch (which fills the
 * KV cache and the values kept for decoding), then one token per row at a time.
 */
export interface StepModel {
  readonly batch: number;
  /** the KV cache's length: the longest sequence (visual prefix included) a row may reach */
  readonly context: number;
  /** logits at every position of a right-padded prompt batch: [B, prefix + T, vocab] */
  prefill(feed: ReadonlyMap<string, Tensor>, promptLength: number): Promise<Tensor>;
  /** logits [B, vocab] for one token per row at its absolute position */
  decode(tokens: Int32Array, positions: Int32Array): Promise<Tensor>;
  /** positions a prompt of T tokens takes before its first new token (T plus any visual prefix) */
  promptSpan(promptLength: number): number;
  destroy(): void;
}

export interface DecoderOptions {
  readonly batch: number;
  readonly context: number;
  /** frozen weights stored as f16 on the device (lowering/plan.ts PlanOptions.weights); default f32 */
  readonly weights?: WeightStorage;
}

/** Checks a prompt batch against the cache before anything runs. */
function checkPrompt(models: GenerationModels, opts: DecoderOptions, T: number): Record<string, number> {
  const dims = { [models.batchDim]: opts.batch, [models.seqDim]: T, [CONTEXT_DIM]: opts.context };
  const span = T + models.prefixLength(dims);
  if (span > opts.context)
    throw new UserError(
      `the prompt takes ${span} positions${span > T ? ` (${span - T} of them the image's)` : ""}, more than the context of ${opts.context}: shorten it or raise --context`,
    );
  return dims;
}

function checkPositions(positions: Int32Array, context: number): void {
  const over = positions.findIndex((p) => p < 0 || p >= context);
  if (over >= 0)
    throw new UserError(`row ${over} reached position ${positions[over]}, past the context of ${context} positions: raise --context or lower --max-tokens`);
}

/**
 * On the device: the decode plan owns the weights and the state; each prefill plan (one
 * per prompt length) borrows them, so the prompt's keys and values land in the same cache
 * the decode steps read. Checkpoint weights stream in as float32 (runtime/param-upload.ts);
 * `params` holds the others (init rules, trained weights).
 */
export class DeviceDecoder implements StepModel {
  private readonly prefills = new Map<number, Promise<PlanExecutor>>();

  private constructor(
    private readonly gpu: Gpu,
    private readonly models: GenerationModels,
    private readonly params: Map<string, Tensor>,
    private readonly opts: DecoderOptions,
    private readonly decoder: PlanExecutor,
    private readonly compiling?: CompileHook,
  ) {}

  get batch(): number {
    return this.opts.batch;
  }
  get context(): number {
    return this.opts.context;
  }

  static async create(
    gpu: Gpu,
    models: GenerationModels,
    params: ReadonlyMap<string, Tensor>,
    opts: DecoderOptions,
    compiling?: CompileHook,
  ): Promise<DeviceDecoder> {
    const m = models.decode;
    const plan = buildPlan(m, { [models.batchDim]: opts.batch, [CONTEXT_DIM]: opts.context }, planTarget(gpu), undefined, { weights: opts.weights });
    const ex = await createExecutor(gpu, plan, m.program.sources, compiling, { persistent: m.state.map((s) => s.input) });
    await uploadParams(ex, m, params);
    return new DeviceDecoder(gpu, models, new Map(params), opts, ex, compiling);
  }

  promptSpan(T: number): number {
    return T + this.models.prefixLength({ [this.models.batchDim]: this.opts.batch, [this.models.seqDim]: T, [CONTEXT_DIM]: this.opts.context });
  }

  private prefillExecutor(T: number): Promise<PlanExecutor> {
    let ex = this.prefills.get(T);
    if (!ex) {
      const m = this.models.prefill;
      const plan = buildPlan(m, checkPrompt(this.models, this.opts, T), planTarget(this.gpu), undefined, { weights: this.opts.weights });
      ex = createExecutor(this.gpu, plan, m.program.sources, this.compiling, { persistent: m.state.map((s) => s.input), shareWith: this.decoder }).then(
        async (e) => {
          await uploadParams(e, m, this.params);
          return e;
        },
      );
      this.prefills.set(T, ex);
    }
    return ex;
  }

  /** New values for some parameters (the trained ones, between periodic evaluations), in every plan. */
  async update(params: ReadonlyMap<string, Tensor>): Promise<void> {
    // prefill plans compiled later start from these values too
    for (const [k, v] of params) this.params.set(k, v);
    this.decoder.writeParams(params, { partial: true });
    for (const p of this.prefills.values()) (await p).writeParams(params, { partial: true });
  }

  async prefill(feed: ReadonlyMap<string, Tensor>, T: number): Promise<Tensor> {
    checkPrompt(this.models, this.opts, T);
    const ex = await this.prefillExecutor(T);
    const [logits] = await ex.run(feed, { read: ["out"], copies: stateCopies(this.models.prefill.state) });
    return logits;
  }

  async decode(tokens: Int32Array, positions: Int32Array): Promise<Tensor> {
    checkPositions(positions, this.opts.context);
    const B = this.opts.batch;
    const feed = new Map([
      ["tokens", tensor([B, 1], tokens)],
      [CACHE_POS, tensor([B], positions)],
    ]);
    const [logits] = await this.decoder.run(feed, { read: ["out"], copies: stateCopies(this.models.decode.state) });
    const V = logits.shape[2];
    return { shape: [B, V], data: logits.data };
  }

  destroy(): void {
    for (const p of this.prefills.values()) void p.then((e) => e.destroy());
    this.decoder.destroy();
  }
}

/** The same steps in the float64 reference interpreter, the state kept on the host. */
export class InterpDecoder implements StepModel {
  private readonly state = new Map<string, Tensor>();

  constructor(
    private readonly models: GenerationModels,
    private readonly params: ReadonlyMap<string, Tensor>,
    private readonly opts: DecoderOptions,
  ) {}

  get batch(): number {
    return this.opts.batch;
  }
  get context(): number {
    return this.opts.context;
  }

  promptSpan(T: number): number {
    return T + this.models.prefixLength({ [this.models.batchDim]: this.opts.batch, [this.models.seqDim]: T, [CONTEXT_DIM]: this.opts.context });
  }

  private run(m: CompiledModel, dims: Record<string, number>, feed: ReadonlyMap<string, Tensor>): Tensor {
    const inputs = new Map(feed);
    for (const s of m.state) {
      const input = m.inputs.find((i) => i.name === s.input)!;
      // a fresh cache is zeros, as the device's freshly created buffers are
      inputs.set(s.input, this.state.get(s.input) ?? tensor(shapeEval(input.shape, dims)));
    }
    const outs = interpret(
      m.outputs.map((o) => o.node),
      { dims, inputs, params: this.params },
    );
    m.outputs.forEach((o, i) => {
      const s = m.state.find((x) => x.update === o.name);
      if (s) this.state.set(s.input, outs[i]);
    });
    return outs[0];
  }

  async prefill(feed: ReadonlyMap<string, Tensor>, T: number): Promise<Tensor> {
    return this.run(this.models.prefill, checkPrompt(this.models, this.opts, T), feed);
  }

  async decode(tokens: Int32Array, positions: Int32Array): Promise<Tensor> {
    checkPositions(positions, this.opts.context);
    const B = this.opts.batch;
    const dims = { [this.models.batchDim]: B, [CONTEXT_DIM]: this.opts.context };
    const logits = this.run(
      this.models.decode,
      dims,
      new Map([
        ["tokens", tensor([B, 1], tokens)],
        [CACHE_POS, tensor([B], positions)],
      ]),
    );
    return { shape: [B, logits.shape[2]], data: logits.data };
  }

  destroy(): void {
    this.state.clear();
  }
}
