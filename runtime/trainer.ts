import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type Plan, type WeightStorage } from "../lowering/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import {
  buildTrainGraph,
  DEFAULT_OPTIMIZER,
  GRAD_NORM_OUTPUT,
  LOSS_OUTPUT,
  type OptimizerConfig,
  PARAM_NORM_OUTPUT,
  stepInputs,
  type TrainGraph,
  trainState,
} from "../compiler/train-graph.ts";
import { type AutotuneOptions, devicePlan } from "./autotune.ts";
import type { Gpu } from "./device.ts";
import { type CompileHook, createExecutor, type PlanExecutor } from "./executor.ts";
import { uploadParams } from "./param-upload.ts";
import { planTarget } from "./webgpu-backend.ts";

export interface StepResult {
  readonly loss: number;
  readonly gradNorm: number;
  /** norm of the trainable weights after the step: NaN or Infinity once any of them is */
  readonly paramNorm: number;
}

/**
 * A compiled training step on the device: forward, loss, backward and AdamW in one
 * command buffer. Parameters and optimizer state live in the executor's buffers; the
 * host only sends a batch and a few scalars (lr, AdamW's bias corrections, dropout's seed) per step and reads back three numbers.
 */
export class Trainer {
  private constructor(
    readonly graph: TrainGraph,
    readonly plan: Plan,
    private readonly ex: PlanExecutor,
    /** the run's seed: with dropout, each step's masks come from it and the step number */
    private readonly seed: number,
  ) {}

  /**
   * `params`: every model parameter by name (frozen and trainable) but those a checkpoint
   * provides (streamed from it unless given here); optimizer state may be
   * included (resume) or starts at zero. `autotune`: tune the step's matmuls on this device
   * first (runtime/autotune.ts).
   */
  static create(
    gpu: Gpu,
    model: CompiledModel,
    dims: Readonly<Record<string, number>>,
    params: ReadonlyMap<string, Tensor>,
    opt: OptimizerConfig = DEFAULT_OPTIMIZER,
    autotune?: boolean | AutotuneOptions,
  ): Promise<Trainer> {
    return Trainer.forGraph(gpu, buildTrainGraph(model, opt), dims, params, { autotune });
  }

  /**
   * The same for a step graph built already (its state's names and shapes are known before
   * anything compiles); `compiling` wraps the pipelines' creation; `seed` (default 0) is
   * the run's, which dropout's masks follow (stepInputs).
   */
  static async forGraph(
    gpu: Gpu,
    graph: TrainGraph,
    dims: Readonly<Record<string, number>>,
    params: ReadonlyMap<string, Tensor>,
    opts: { autotune?: boolean | AutotuneOptions; compiling?: CompileHook; seed?: number; weights?: WeightStorage } = {},
  ): Promise<Trainer> {
    // what each step overwrites (trained weights, optimizer state) must stay in buffers;
    // frozen weights may be read from textures, filled once by writeParams
    const mutableParams = new Set(graph.updates.map((u) => u.to));
    const plan = await devicePlan(
      gpu,
      (matmulTuning) => buildPlan(graph.model, dims, planTarget(gpu), undefined, { matmulTuning, mutableParams, weights: opts.weights }),
      opts.autotune,
    );
    const ex = await createExecutor(gpu, plan, graph.model.program?.sources, opts.compiling);
    const all = new Map(params);
    for (const p of graph.trained) for (const s of [p.m, p.v]) if (!all.has(s)) all.set(s, tensor(p.shape));
    await uploadParams(ex, graph.model, all);
    return new Trainer(graph, plan, ex, opts.seed ?? 0);
  }

  /** Names of the trainable parameters and their optimizer state: what a checkpoint holds. */
  get stateNames(): string[] {
    return trainState(this.graph).map((t) => t.name);
  }

  /** One optimizer step (`step` is 1-based: it sets AdamW's bias corrections). */
  async step(batch: ReadonlyMap<string, Tensor>, step: number, lr: number): Promise<StepResult> {
    const inputs = new Map(batch);
    for (const [k, v] of Object.entries(stepInputs(this.graph, step, lr, this.seed))) inputs.set(k, { shape: [], data: Float64Array.of(v) });
    const [loss, gn, pn] = await this.ex.run(inputs, { read: [LOSS_OUTPUT, GRAD_NORM_OUTPUT, PARAM_NORM_OUTPUT], copies: this.graph.updates });
    return { loss: loss.data[0], gradNorm: gn.data[0], paramNorm: pn.data[0] };
  }

  async readState(): Promise<Map<string, Tensor>> {
    const names = this.stateNames;
    const values = await this.ex.readParams(names);
    return new Map(names.map((n, i) => [n, values[i]]));
  }

  destroy(): void {
    this.ex.destroy();
  }
}
