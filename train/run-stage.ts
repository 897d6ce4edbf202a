import { createHash } from "node:crypto";
import { existsSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import { topoOrder } from "../compiler/graph.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { DEFAULT_OPTIMIZER } from "../compiler/train-graph.ts";
import { CLASS_NAMES } from "../data/fashion-mnist.ts";
import type { LoadedDataset } from "../data/loader.ts";
import { evalClassifier, evalVqa, Predictor } from "../eval/evaluate.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { writeLossPlot } from "../io/loss-plot.ts";
import { MetricsLog, type MetricsRecord, readMetrics, truncateAfterStep } from "../io/metrics-log.ts";
import { TrainingProgress } from "../io/progress.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { Program } from "../grammar/modules.ts";
import type { Gpu } from "../runtime/device.ts";
import { initAllParams } from "../runtime/interp-backend.ts";
import { Trainer } from "../runtime/trainer.ts";
import { loadCheckpoint, loadMeta, loadTensors, saveCheckpoint, saveTensors, STAGE_FILES } from "./checkpoint.ts";
import { learningRate } from "./lr-schedule.ts";
import type { StageConfig, Task } from "./stages.ts";
import { taskData } from "./tasks.ts";

export interface StageContext {
  readonly gpu: Gpu;
  readonly program: Program;
  readonly data: LoadedDataset;
  readonly out: string;
  readonly resume: boolean;
  readonly say: (line: string) => void;
  /** evaluation sizes (held-out problems / caption images); smaller for quick runs */
  readonly evalProblems: number;
  readonly evalCaptions: number;
  /** tune the training step's matmuls on the device first (runtime/autotune.ts) */
  readonly autotune?: boolean;
}

/** Thrown when the loss or gradient stops being finite; the last good checkpoint stays on disk. */
export class TrainingDiverged extends UserError {}

export interface StageResult {
  readonly dir: string;
  readonly reused: boolean;
  readonly eval?: Record<string, unknown>;
  readonly msPerStep?: number;
}

export function stageDir(out: string, stage: StageConfig, model: string): string {
  return join(out, stage.model ? stage.name : `${stage.name}-${model}`);
}

/** What a stage's result depends on: reused only when all of it is unchanged. */
function stageKey(stage: StageConfig, model: CompiledModel, data: LoadedDataset, backbones: readonly string[]): string {
  const { span: _span, ...config } = stage;
  const shapes = model.params.map((p) => `${p.name}:${p.shape.join("x")}:${p.trainable ? "t" : "f"}`);
  const h = createHash("sha256").update(JSON.stringify({ config, model: model.name, shapes, data: data.manifest?.key ?? null, backbones }));
  // the elaborated graph itself (every op, constant and shape): editing a scale in the .dehvf file retrains
  for (const n of topoOrder(model.outputs.map((o) => o.node))) h.update(`${n.key}:${n.shape.map(String).join(",")};`);
  return h.digest("hex").slice(0, 16);
}

const fmt = (x: number, d = 4) => (Number.isFinite(x) ? x.toFixed(d) : String(x));

/** Held-out evaluation of a task on one split; the record goes to the metrics log, eval.json and the terminal. */
export async function evaluateTask(task: Task, p: Predictor, data: LoadedDataset, split: "val" | "test", sizes: { problems: number; captions: number }): Promise<Record<string, unknown>> {
  const held = data.splits[split];
  if (!held) throw new Error(`the dataset has no ${split} split loaded`);
  if (task === "classify") {
    const r = await evalClassifier(p, held, sizes.problems);
    return { split, item_accuracy: r.accuracy, items: r.items * 4, chance: 1 / CLASS_NAMES.length };
  }
  if (task === "text") return { split };
  const r = await evalVqa(p, data.tokenizer!, held, { problems: sizes.problems, captionImages: sizes.captions });
  const perType = Object.fromEntries(Object.entries(r.mc.perCategory).map(([k, c]) => [k, c.accuracy]));
  return { split, accuracy: r.mc.overall.accuracy, questions: r.mc.overall.total, chance: r.chance, per_type: perType, bleu4: r.captions.bleu4, cider_d: r.captions.ciderD, caption_images: r.captions.images, samples: r.samples };
}

/** Periodic evaluations are a quick look (256 questions, no captions); the final one is the full report. */
function evaluate(stage: StageConfig, p: Predictor, ctx: StageContext, split: "val" | "test"): Promise<Record<string, unknown>> {
  const quick = split === "val";
  return evaluateTask(stage.task, p, ctx.data, split, { problems: quick ? Math.min(256, ctx.evalProblems) : ctx.evalProblems, captions: quick ? 0 : ctx.evalCaptions });
}

export function describeEval(e: Record<string, unknown>): string {
  const pct = (x: unknown) => `${(100 * (x as number)).toFixed(1)}%`;
  if ("item_accuracy" in e) return `${e.split} item accuracy ${pct(e.item_accuracy)} (chance ${pct(e.chance)})`;
  if (!("accuracy" in e)) return `${e.split}: no held-out metric for this task`;
  const per = Object.entries(e.per_type as Record<string, number>).map(([k, v]) => `${k} ${pct(v)}`).join(", ");
  // the quick periodic evaluations decode no captions: say nothing rather than NaN
  const captions = e.caption_images ? `; captions BLEU-4 ${fmt(e.bleu4 as number, 3)} CIDEr-D ${fmt(e.cider_d as number, 3)}` : "";
  return `${e.split} accuracy ${pct(e.accuracy)} of ${e.questions} (chance ${pct(e.chance)}; ${per})${captions}`;
}

/**
 * Trains one stage (or reuses its finished result): backbones loaded by parameter name,
 * the compiled step run `steps` times with warm-up + cosine, metrics and checkpoints
 * written as it goes, evaluation on the held-out split at the end.
 */
export async function runStage(ctx: StageContext, stage: StageConfig, modelName: string, backboneDirs: readonly string[], steps?: number): Promise<StageResult> {
  const cfg = steps === undefined ? stage : { ...stage, steps };
  const model = elaborate(ctx.program, cfg.model ?? modelName);
  const dir = stageDir(ctx.out, cfg, model.name);
  const key = stageKey(cfg, model, ctx.data, backboneDirs);
  const label = `${cfg.name} (${model.name})`;
  const finalFile = join(dir, STAGE_FILES.final);
  if (existsSync(finalFile)) {
    if ((await loadMeta(finalFile)).key === key) {
      ctx.say(`${label}: done before, reusing ${finalFile}`);
      return { dir, reused: true };
    }
    ctx.say(`${label}: ${finalFile} is from another configuration; training again`);
  }
  mkdirSync(dir, { recursive: true });

  const params = initAllParams(model, cfg.seed);
  for (const bdir of backboneDirs) {
    const { tensors } = await loadTensors(join(bdir, STAGE_FILES.final));
    let n = 0;
    for (const [name, t] of tensors) {
      const mine = params.get(name);
      if (!mine) continue;
      if (mine.shape.join("x") !== t.shape.join("x")) throw new Error(`${label}: backbone ${bdir} has ${name} of shape [${t.shape}], this model needs [${mine.shape}]`);
      params.set(name, t);
      n++;
    }
    ctx.say(`${label}: ${n} tensors from ${join(bdir, STAGE_FILES.final)}`);
  }
  const trainable = model.params.filter((p) => p.trainable);
  const size = (names: readonly { name: string }[]) => names.reduce((a, p) => a + params.get(p.name)!.data.length, 0);
  const [count, total] = [size(trainable), size(model.params)];
  ctx.say(`${label}: trainable parameters ${count.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} (${[...new Set(trainable.map((p) => p.name.split(".")[0]))].join(", ")})`);

  const task = taskData(cfg.task, ctx.data, cfg.batch, cfg.seed);
  let start = 0;
  const metricsFile = join(dir, STAGE_FILES.metrics);
  const saved = await loadCheckpoint(dir);
  if (saved && ctx.resume) {
    if (saved.meta.key !== key) throw new UserError(`${label}: the checkpoint in ${dir} is from another configuration; remove it or drop --resume`);
    for (const [k, v] of saved.tensors) params.set(k, v);
    start = Number(saved.meta.step);
    truncateAfterStep(metricsFile, start);
    ctx.say(`${label}: resuming at step ${start} of ${cfg.steps}`);
  } else {
    if (saved) ctx.say(`${label}: a checkpoint at step ${saved.meta.step} exists; starting over (pass --resume to continue it)`);
    truncateAfterStep(metricsFile, 0);
  }

  const t0 = performance.now();
  const trainer = await Trainer.create(ctx.gpu, model, task.dims, params, { ...DEFAULT_OPTIMIZER, weightDecay: cfg.weightDecay, clip: cfg.clip }, ctx.autotune && { log: ctx.say });
  ctx.say(`${label}: ${task.examples.toLocaleString("en-US")} examples, batch ${cfg.batch}, dims ${JSON.stringify(task.dims)}; step plan ${trainer.plan.kernels.length} kernels, compiled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const evalDims = { ...task.dims, B: 64 };
  let predictor: Predictor | undefined;
  const predictorWith = async (state: ReadonlyMap<string, Tensor>) => {
    predictor ??= await Predictor.create(ctx.gpu, model, evalDims, params);
    predictor.update(state);
    return predictor;
  };
  const log = MetricsLog.open(metricsFile);
  const progress = new TrainingProgress({ total: cfg.steps, startStep: start, stage: label });
  const meta = (step: number) => ({ key, step: String(step), stage: cfg.name, model: model.name });
  let stepMs = 0;
  let timed = 0;
  let lastSaved = start;
  try {
    for (let step = start + 1; step <= cfg.steps; step++) {
      const feed = task.batchAt(step - 1);
      const lr = learningRate(step, cfg.steps, cfg.lr, cfg.warmup);
      const s0 = performance.now();
      const r = await trainer.step(feed, step, lr);
      const ms = performance.now() - s0;
      if (step > start + 1) {
        stepMs += ms;
        timed++;
      }
      if (!Number.isFinite(r.loss) || !Number.isFinite(r.gradNorm)) {
        log.append({ step, loss: r.loss, grad_norm: r.gradNorm, lr });
        throw new TrainingDiverged(`${label}: the loss became ${r.loss} (gradient norm ${r.gradNorm}) at step ${step}; stopped. ${lastSaved ? `The last good checkpoint is step ${lastSaved} in ${join(dir, STAGE_FILES.checkpoint)}` : "no checkpoint was written"}; try a lower lr (now ${cfg.lr}) or more warm-up`);
      }
      log.append({ step, loss: r.loss, grad_norm: r.gradNorm, lr, ms: Math.round(ms) });
      progress.update(step, { loss: r.loss, tokens: task.unitsPerStep });
      if (step % cfg.checkpointEvery === 0 || step === cfg.steps) {
        await saveCheckpoint(dir, await trainer.readState(), meta(step));
        lastSaved = step;
        // lets the resume test kill the process for real (SIGKILL: no cleanup runs) right after a checkpoint
        if (process.env.DEHVF_KILL_AFTER_CHECKPOINT === `${cfg.name}:${step}`) process.kill(process.pid, "SIGKILL");
      }
      if (cfg.evalEvery > 0 && step % cfg.evalEvery === 0 && step < cfg.steps) {
        const e = await evaluate(cfg, await predictorWith(await trainer.readState()), ctx, "val");
        log.append({ step, eval: e });
        progress.log(`  step ${step}: ${describeEval(e)}`);
      }
    }
  } finally {
    progress.stop();
    log.close();
  }
  const state = await trainer.readState();
  trainer.destroy();
  const final = new Map(params);
  for (const [k, v] of state) if (!k.includes("@")) final.set(k, v);
  const result = await evaluate(cfg, await predictorWith(final), ctx, "test");
  predictor?.destroy();
  const msPerStep = timed ? stepMs / timed : undefined;
  await saveTensors(finalFile, final, meta(cfg.steps));
  await writeJsonAtomic(join(dir, STAGE_FILES.eval), { stage: cfg.name, model: model.name, steps: cfg.steps, trainable: count, ms_per_step: msPerStep, ...result });
  await plotLoss(metricsFile, join(dir, STAGE_FILES.plot), label);
  ctx.say(`${label}: ${describeEval(result)}${msPerStep ? `; ${msPerStep.toFixed(0)} ms/step` : ""}`);
  return { dir, reused: false, eval: result, msPerStep };
}

async function plotLoss(metricsFile: string, png: string, title: string): Promise<void> {
  const recs: MetricsRecord[] = readMetrics(metricsFile);
  const points = recs.filter((r) => typeof r.loss === "number" && Number.isFinite(r.loss)).map((r) => [r.step, r.loss as number] as [number, number]);
  if (points.length) await writeLossPlot(png, [{ name: "train loss", points }], { title, xLabel: "step", yLabel: "loss", logY: points.every(([, y]) => y > 0) });
}
