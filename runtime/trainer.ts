import type { CompiledModel } from "../compiler/elaborate.ts";
import { buildPlan, type Plan } from "../compiler/plan.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { adamScalars, buildTrainGraph, DEFAULT_OPTIMIZER, GRAD_NORM_OUTPUT, LOSS_OUTPUT, type OptimizerConfig, type TrainGraph } from "../compiler/train-graph.ts";
import { type AutotuneOptions, devicePlan } from "./autotune.ts";
import type { Gpu } from "./device.ts";
import { PlanExecutor } from "./executor.ts";
import { planTarget } from "./webgpu-backend.ts";

export interface StepResult {
  readonly loss: number;
  readonly gradNorm: number;
}

/**
 * A compiled training step on the device: forward, loss, backward and AdamW in one
 * command buffer. Parameters and optimizer state live in the executor's buffers; the
 * host only sends a batch and three scalars per step and reads back two numbers.
 */
export class Trainer {
  private constructor(
    readonly graph: TrainGraph,
    readonly plan: Plan,
    private readonly ex: PlanExecutor,
    readonly opt: OptimizerConfig,
  ) {}

  /**
   * `params`: every model parameter by name (frozen and trainable); optimizer state may be
   * included (resume) or starts at zero. `autotune`: tune the step's matmuls on this device
   * first (runtime/autotune.ts).
   */
  static async create(gpu: Gpu, model: CompiledModel, dims: Readonly<Record<string, number>>, params: ReadonlyMap<string, Tensor>, opt: OptimizerConfig = DEFAULT_OPTIMIZER, autotune?: boolean | AutotuneOptions): Promise<Trainer> {
    const graph = buildTrainGraph(model, opt);
    // what each step overwrites (trained weights, optimizer state) must stay in buffers;
    // frozen weights may be read from textures, filled once by writeParams
    const mutableParams = new Set(graph.updates.map((u) => u.to));
    const plan = await devicePlan(gpu, (matmulTuning) => buildPlan(graph.model, dims, planTarget(gpu), undefined, { matmulTuning, mutableParams }), autotune);
    const ex = await PlanExecutor.create(gpu, plan, model.program?.sources);
    const all = new Map(params);
    for (const p of graph.trained)
      for (const s of [p.m, p.v]) if (!all.has(s)) all.set(s, tensor(p.shape));
    ex.writeParams(all);
    return new Trainer(graph, plan, ex, opt);
  }

  /** Names of the trainable parameters and their optimizer state: what a checkpoint holds. */
  get stateNames(): string[] {
    return this.graph.trained.flatMap((p) => [p.name, p.m, p.v]);
  }

  /** One optimizer step (`step` is 1-based: it sets AdamW's bias corrections). */
  async step(batch: ReadonlyMap<string, Tensor>, step: number, lr: number): Promise<StepResult> {
    const inputs = new Map(batch);
    for (const [k, v] of Object.entries(adamScalars(step, lr, this.opt))) inputs.set(k, { shape: [], data: Float64Array.of(v) });
    const [loss, gn] = await this.ex.run(inputs, { read: [LOSS_OUTPUT, GRAD_NORM_OUTPUT], copies: this.graph.updates });
    return { loss: loss.data[0], gradNorm: gn.data[0] };
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
