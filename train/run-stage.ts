import { existsSync, mkdirSync } from "node:fs";
import { announcedCompile } from "../runtime/compile-progress.ts";
import { readFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { type CompiledModel, elaborate } from "../compiler/elaborate.ts";
import type { Tensor } from "../compiler/tensor.ts";
import { buildTrainGraph, DEFAULT_OPTIMIZER, trainState, usesDropout } from "../compiler/train-graph.ts";
import type { LoadedDataset } from "../data/loader.ts";
import { describeEval, describeSolutions, EVAL_BATCH, EvalModel, evaluationSize } from "../eval/task-eval.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { Program } from "../grammar/modules.ts";
import { writeJsonAtomic } from "../io/atomic.ts";
import { MetricsLog, truncateAfterStep } from "../io/metrics-log.ts";
import { TrainingProgress } from "../io/progress.ts";
import type { Gpu } from "../runtime/device.ts";
import { initAllParams } from "../runtime/interp-backend.ts";
import { storedParams } from "../io/checkpoints/load.ts";
import { Trainer } from "../runtime/trainer.ts";
import { CheckpointError, checkedStep, checkpointFile, loadMeta, readChecked, recordedDigest, saveTensors, STAGE_FILES } from "./checkpoint.ts";
import { GoodCheckpoints, killPoint } from "./good-checkpoints.ts";
import {
  checkpointsDigest,
  decodeIdentity,
  encodeIdentity,
  formatSetting,
  identityChanges,
  identityKey,
  resumeKey,
  type StageIdentity,
  stageIdentity,
} from "./identity.ts";
import { plotLoss } from "./loss-plot.ts";
import { learningRate } from "./lr-schedule.ts";
import { importResult, publishPending, publishResult, workDir } from "./stage-result.ts";
import type { StageConfig } from "./stages.ts";
import { taskData } from "./tasks.ts";
import { checkTaskFits } from "./task-fit.ts";
import { checkSizes } from "../compiler/size-limits.ts";
import { hostLimits } from "../runtime/host-limits.ts";
import type { WeightStorage } from "../lowering/plan.ts";
import { checkWeightStorage, deviceLimits } from "../runtime/webgpu-backend.ts";

export interface StageContext {
  readonly gpu: Gpu;
  readonly program: Program;
  readonly data: LoadedDataset;
  /** datasetDigest(data): part of every stage's identity */
  readonly dataDigest: string;
  readonly out: string;
  readonly resume: boolean;
  readonly say: (line: string) => void;
  /** evaluation sizes (held-out problems / caption images); smaller for quick runs */
  readonly evalProblems: number;
  readonly evalCaptions: number;
  /** tune the training step's matmuls on the device first (runtime/autotune.ts) */
  readonly autotune?: boolean;
  /** directories of finished stages (`--reuse`, e.g. shipped backbones) a stage is copied from when made from exactly the same */
  readonly reuseFrom?: readonly string[];
}

/** Thrown when the loss, the gradient or the weights stop being finite; the last good checkpoint stays on disk. */
export class TrainingDiverged extends UserError {}

export interface StageResult {
  readonly dir: string;
  readonly reused: boolean;
  readonly identity: StageIdentity;
  readonly key: string;
  /** digest of the tensors in final.safetensors, checked when read */
  readonly weights: string;
  readonly eval?: Record<string, unknown>;
  readonly msPerStep?: number;
}

/**
 * `runs/pretrain_vision`, `runs/finetune-TinyVQA`; a run whose `--seed` differs from the
 * section's own seed goes beside it, `runs/finetune-TinyVQA-seed1`, so runs of several
 * seeds sit side by side and never retrain one another.
 */
export function stageDir(out: string, stage: StageConfig, model: string, seedOverride?: number, weightsOverride?: WeightStorage): string {
  return join(
    out,
    `${stage.model ? stage.name : `${stage.name}-${model}`}${seedOverride === undefined ? "" : `-seed${seedOverride}`}${weightsOverride === undefined ? "" : `-${weightsOverride}`}`,
  );
}

/**
 * What the command line overrides in a stage's section: `steps` (the last stage's), `seed`
 * (every stage's), `weights` (the last stage's: the frozen weights' storage on the device).
 */
export interface StageOverrides {
  readonly steps?: number;
  readonly seed?: number;
  readonly weights?: WeightStorage;
}

/** Periodic evaluations are a quick look (256 questions, no captions); the final one is the full report. */
function evalSizes(ctx: StageContext, split: "val" | "test"): { problems: number; captions: number } {
  return split === "val" ? { problems: Math.min(256, ctx.evalProblems), captions: 0 } : { problems: ctx.evalProblems, captions: ctx.evalCaptions };
}

interface Stage {
  readonly ctx: StageContext;
  readonly cfg: StageConfig;
  /** the model as evaluated and generated (dropout is the identity) */
  readonly model: CompiledModel;
  /** the model as the training step computes it (elaborated for training: dropout drops); `model` itself when it has no dropout */
  readonly trainModel: CompiledModel;
  readonly dir: string;
  readonly label: string;
  readonly identity: StageIdentity;
  readonly key: string;
}

/**
 * Trains one stage, or reuses its finished result when everything it was made from is
 * unchanged (by content: train section, model graph, data, backbones' weights): backbones
 * loaded by parameter name, the compiled step run `steps` times with warm-up + cosine,
 * metrics and checkpoints written as it goes, evaluation on the held-out split at the end.
 */
export async function runStage(
  ctx: StageContext,
  stage: StageConfig,
  modelName: string,
  backbones: readonly StageResult[],
  overrides: StageOverrides = {},
): Promise<StageResult> {
  const { steps, seed } = overrides;
  // asking for what the section has already (f32 by default) is no override: same identity, same directory
  const weights = overrides.weights !== undefined && overrides.weights !== (stage.weights ?? "f32") ? overrides.weights : undefined;
  const cfg = { ...stage, ...(steps !== undefined && { steps }), ...(seed !== undefined && { seed }), ...(weights !== undefined && { weights }) };
  checkWeightStorage(ctx.gpu, cfg.weights, `train section \`${cfg.name}\``);
  const { trainModel, model, identity, key } = await stageKey(ctx.program, cfg, modelName, ctx.dataDigest, backbones);
  const dir = stageDir(ctx.out, cfg, model.name, seed !== undefined && seed !== stage.seed ? seed : undefined, weights);
  const s: Stage = { ctx, cfg, model, trainModel, dir, label: `${cfg.name} (${model.name})`, identity, key };
  if (await publishPending(dir)) ctx.say(`${s.label}: the previous run finished but was stopped while moving its result into ${dir}; moved it`);
  if ((await finishedKey(join(dir, STAGE_FILES.final))) !== s.key) await importFinished(s);
  return (await reuse(s)) ?? train(s, backbones);
}

/**
 * What a stage's result is made from and its key: a finished result (trained here, shipped,
 * or in a --reuse directory) is taken only under the same key. The step's graph (with
 * dropout) is what the identity describes; without dropout the two models are one.
 */
export async function stageKey(
  program: Program,
  cfg: StageConfig,
  modelName: string,
  dataDigest: string,
  backbones: readonly Pick<StageResult, "identity" | "key" | "weights">[],
): Promise<{ trainModel: CompiledModel; model: CompiledModel; identity: StageIdentity; key: string }> {
  const trainModel = elaborate(program, cfg.model ?? modelName, { training: true });
  const model = usesDropout(trainModel) ? elaborate(program, cfg.model ?? modelName) : trainModel;
  const identity = stageIdentity(
    cfg,
    trainModel,
    dataDigest,
    Object.fromEntries(backbones.map((b) => [b.identity.stage, { key: b.key, weights: b.weights }])),
    await checkpointsDigest(model),
  );
  return { trainModel, model, identity, key: identityKey(identity) };
}

/** The identity key a finished result records, or undefined where there is none (or no readable one). */
async function finishedKey(finalFile: string): Promise<string | undefined> {
  if (!existsSync(finalFile)) return undefined;
  try {
    return (await loadMeta(finalFile)).key;
  } catch {
    return undefined;
  }
}

/** Copies this stage's finished result from the first --reuse directory that has one made from exactly the same (reuse() then checks it). */
async function importFinished(s: Stage): Promise<void> {
  for (const from of s.ctx.reuseFrom ?? []) {
    const src = join(from, basename(s.dir));
    const file = join(src, STAGE_FILES.final);
    if (!existsSync(file)) continue;
    const key = await finishedKey(file);
    if (key === undefined) {
      s.ctx.say(`${s.label}: ${file} cannot be read as a finished result; not taken`);
      continue;
    }
    if (key !== s.key) {
      s.ctx.say(`${s.label}: ${src} was trained from something else; not taken`);
      continue;
    }
    await importResult(src, s.dir);
    s.ctx.say(`${s.label}: took the finished result from ${src}`);
    return;
  }
}

/** The finished result, if it was made from exactly this stage's identity; checked before it is trusted. */
async function reuse(s: Stage): Promise<StageResult | undefined> {
  const { ctx, dir, label } = s;
  const finalFile = join(dir, STAGE_FILES.final);
  if (!existsSync(finalFile)) return undefined;
  const meta = await loadMeta(finalFile);
  const was = decodeIdentity(meta.identity);
  if (meta.key !== s.key || !was) {
    const why = was ? identityChanges(was, s.identity) : ["it was written by an older dehvf that did not record what it was trained from"];
    ctx.say(
      `${label}: ${finalFile} was trained from something else (${why.join("; ") || "its recorded key differs"}); training again. It stays in place until the new result is complete.`,
    );
    return undefined;
  }
  checkedStep(finalFile, meta.step, s.cfg.steps);
  const { tensors } = await readChecked(finalFile, { expected: storedParams(s.model.params), exact: true });
  ctx.say(`${label}: done before, reusing ${finalFile}`);
  const evalFile = join(dir, STAGE_FILES.eval);
  let report: Record<string, unknown> | undefined;
  if (!existsSync(evalFile) || (await readJsonOrUndefined(evalFile))?.key !== s.key) {
    ctx.say(`${label}: ${evalFile} is missing or from another run; evaluating again`);
    const ev = await EvalModel.create(ctx.say, ctx.gpu, s.model, s.cfg.task, ctx.data, tensors, EVAL_BATCH, s.cfg.weights);
    try {
      report = await ev.evaluateSaying(ctx.say, ctx.data, "test", evalSizes(ctx, "test"));
    } finally {
      ev.destroy();
    }
    await writeEval(s, evalFile, report, undefined);
  }
  const plot = join(dir, STAGE_FILES.plot);
  if (!existsSync(plot)) await plotLoss(join(dir, STAGE_FILES.metrics), plot, label);
  return { dir, reused: true, identity: s.identity, key: s.key, weights: recordedDigest(meta)!, eval: report };
}

async function readJsonOrUndefined(file: string): Promise<Record<string, unknown> | undefined> {
  try {
    const v = JSON.parse(await readFile(file, "utf8"));
    return v && typeof v === "object" ? v : undefined;
  } catch {
    return undefined;
  }
}

async function writeEval(s: Stage, file: string, report: Record<string, unknown>, extra: Record<string, unknown> | undefined): Promise<void> {
  const trainable = s.model.params.filter((p) => p.trainable).reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  await writeJsonAtomic(file, { stage: s.cfg.name, model: s.model.name, key: s.key, steps: s.cfg.steps, trainable, ...extra, ...report });
}

/** Every parameter the model takes from its backbones' final weights (checked), by name. */
async function loadBackbones(s: Stage, params: Map<string, Tensor>, backbones: readonly StageResult[]): Promise<void> {
  const provided = new Set<string>();
  for (const b of backbones) {
    const file = join(b.dir, STAGE_FILES.final);
    const { tensors, meta } = await readChecked(file, { only: (n) => params.has(n) });
    if (recordedDigest(meta) !== b.weights)
      throw new CheckpointError(file, `changed since stage \`${b.identity.stage}\` finished (another run wrote it?); run again`);
    for (const [name, t] of tensors) {
      const mine = params.get(name)!;
      if (mine.shape.join("x") !== t.shape.join("x"))
        throw new CheckpointError(file, `has shape [${t.shape.join(", ")}], but ${s.model.name} needs [${mine.shape.join(", ")}]`, name);
      params.set(name, t);
      provided.add(name);
    }
    s.ctx.say(`${s.label}: ${tensors.size} tensors from ${file}`);
  }
  // a frozen weight nobody provides would silently stay at its random init
  const missing = backbones.length ? s.model.params.filter((p) => !p.trainable && !p.source && !provided.has(p.name)).map((p) => p.name) : [];
  if (missing.length)
    throw new UserError(
      `${s.label}: ${missing.length} frozen parameters are in none of its backbones (${backbones.map((b) => b.identity.stage).join(", ")}), e.g. ${missing.slice(0, 3).join(", ")}; they would stay at their random init. Check the backbone models' parameter names, or mark them trainable.`,
    );
}

async function train(s: Stage, backbones: readonly StageResult[]): Promise<StageResult> {
  const { ctx, cfg, model, trainModel, dir, label } = s;
  const work = workDir(dir);
  // refuse what cannot work before anything is allocated, compiled or written
  const task = taskData(ctx.data, cfg);
  checkTaskFits(model, cfg, ctx.data, task);
  const evalDims = { ...task.dims, B: EVAL_BATCH };
  const device = deviceLimits(ctx.gpu);
  checkSizes(trainModel, task.dims, { host: hostLimits(), training: true, device, dimFlags: { B: `\`batch\` in train section \`${cfg.name}\`` } });
  checkSizes(model, evalDims, { device });
  mkdirSync(work, { recursive: true });
  const params = initAllParams(model, cfg.seed);
  await loadBackbones(s, params, backbones);
  const trainable = model.params.filter((p) => p.trainable);
  const size = (ps: readonly { shape: readonly number[] }[]) => ps.reduce((a, p) => a + p.shape.reduce((x, y) => x * y, 1), 0);
  const [count, total] = [size(trainable), size(model.params)];
  ctx.say(
    `${label}: trainable parameters ${count.toLocaleString("en-US")} of ${total.toLocaleString("en-US")} (${[...new Set(trainable.map((p) => p.name.split(".")[0]))].join(", ")})`,
  );

  const graph = buildTrainGraph(trainModel, { ...DEFAULT_OPTIMIZER, weightDecay: cfg.weightDecay, clip: cfg.clip }, { recompute: cfg.recompute });
  const start = await restore(s, params, trainState(graph));
  const metricsFile = join(work, STAGE_FILES.metrics);
  truncateAfterStep(metricsFile, start);

  const t0 = performance.now();
  const trainer = await Trainer.forGraph(ctx.gpu, graph, task.dims, params, {
    seed: cfg.seed,
    weights: cfg.weights,
    autotune: ctx.autotune && { log: ctx.say },
    compiling: announcedCompile(ctx.say, (n) => `${label}: compiling the training step's ${n} pipelines`, "slow on a first run; the driver caches them"),
  });
  ctx.say(
    `${label}: ${task.examples.toLocaleString("en-US")} examples, batch ${cfg.batch}, dims ${JSON.stringify(task.dims)}; step plan ${trainer.plan.kernels.length} kernels, compiled in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
  );
  let evaluator: EvalModel | undefined;
  const evaluatorWith = async (state: ReadonlyMap<string, Tensor>) => {
    evaluator ??= await EvalModel.create(progress.log.bind(progress), ctx.gpu, model, cfg.task, ctx.data, params, EVAL_BATCH, cfg.weights);
    await evaluator.update(state);
    return evaluator;
  };
  const log = MetricsLog.open(metricsFile);
  const progress = new TrainingProgress({ total: cfg.steps, startStep: start, stage: label });
  const meta = (step: number) => ({
    key: s.key,
    resume_key: resumeKey(s.identity),
    identity: encodeIdentity(s.identity),
    step: String(step),
    stage: cfg.name,
    model: model.name,
  });
  let stepMs = 0;
  let timed = 0;
  const checkpoints = new GoodCheckpoints(work, cfg.name, meta, start);
  const diverged = (what: string, step: number) => {
    const saved = checkpoints.lastSaved;
    const justResumed = start > 0 && saved === start && step <= start + cfg.checkpointEvery;
    const advice = !saved
      ? `No checkpoint was written: lower \`lr\` (now ${formatSetting(cfg.lr)}) or raise \`warmup\` in train section \`${cfg.name}\` and run again`
      : `The last good checkpoint is step ${saved} in ${join(work, STAGE_FILES.checkpoint)}: lower \`lr\` in train section \`${cfg.name}\` (now ${formatSetting(cfg.lr)}) or raise \`warmup\`, then run the same command with --resume to go on from it${justResumed ? " (it diverged again right after resuming from there: if a lower lr does not help, drop --resume to start over)" : ""}`;
    return new TrainingDiverged(`${label}: ${what} at step ${step}; stopped. ${advice}.`);
  };
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
      const rec = { step, loss: r.loss, grad_norm: r.gradNorm, param_norm: r.paramNorm, lr };
      if (!Number.isFinite(r.loss) || !Number.isFinite(r.gradNorm)) {
        log.append(rec);
        checkpoints.discard();
        throw diverged(`the loss became ${r.loss} (gradient norm ${r.gradNorm})`, step);
      }
      // the weights that gave this finite loss and gradient are good to keep
      await checkpoints.confirm();
      if (!Number.isFinite(r.paramNorm)) {
        log.append(rec);
        throw diverged(`the norm of the weights became ${r.paramNorm}`, step);
      }
      log.append({ ...rec, ms: Math.round(ms) });
      progress.update(step, { loss: r.loss, tokens: task.unitsPerStep });
      if (step % cfg.checkpointEvery === 0 || step === cfg.steps) {
        const bad = await checkpoints.offer(step, await trainer.readState(), step === cfg.steps);
        if (bad) throw diverged(`\`${bad}\` stopped being finite`, step);
      }
      if (cfg.evalEvery > 0 && step % cfg.evalEvery === 0 && step < cfg.steps) {
        const sizes = evalSizes(ctx, "val");
        const e = await progress.during(`evaluating on ${evaluationSize(cfg.task, sizes)} (val split)`, async () =>
          (await evaluatorWith(await trainer.readState())).evaluate(ctx.data, "val", sizes),
        );
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
  // the model's parameters only: the optimizer state restored on resume is not part of the result
  // frozen weights from a checkpoint (`from "..."`) stay in it: the predictor streams them again
  const final = new Map(storedParams(model.params).map((p) => [p.name, state.get(p.name) ?? params.get(p.name)!]));
  const result = await (await evaluatorWith(final)).evaluateSaying((line) => ctx.say(`${label}: ${line}`), ctx.data, "test", evalSizes(ctx, "test"));
  evaluator?.destroy();
  const msPerStep = timed ? stepMs / timed : undefined;
  // the result is written whole into work/ (final.safetensors last), then moved into place
  await writeEval(s, join(work, STAGE_FILES.eval), result, { ms_per_step: msPerStep });
  await plotLoss(metricsFile, join(work, STAGE_FILES.plot), label);
  const weights = await saveTensors(join(work, STAGE_FILES.final), final, meta(cfg.steps));
  killPoint(cfg.name, "final-written");
  await publishResult(dir);
  ctx.say(`${label}: ${describeEval(result)}${msPerStep ? `; ${msPerStep.toFixed(0)} ms/step` : ""}`);
  const solutions = describeSolutions(result);
  if (solutions) ctx.say(`${label}: ${solutions}`);
  return { dir, reused: false, identity: s.identity, key: s.key, weights, eval: result, msPerStep };
}

/**
 * With --resume, loads the checkpoint into `params` (checked: identity, step, every state
 * tensor present with its shape, finite, matching its digest) and returns its step; else 0.
 */
async function restore(s: Stage, params: Map<string, Tensor>, state: readonly { name: string; shape: readonly number[] }[]): Promise<number> {
  const { ctx, cfg, label } = s;
  const file = await checkpointFile(workDir(s.dir));
  if (!ctx.resume) {
    if (file) ctx.say(`${label}: a checkpoint exists (${file}); starting over from step 0 (pass --resume to continue it)`);
    return 0;
  }
  if (!file) {
    ctx.say(`${label}: --resume: no checkpoint in ${workDir(s.dir)}; starting from step 0`);
    return 0;
  }
  const meta = await loadMeta(file);
  const was = decodeIdentity(meta.identity);
  if (!was) throw new CheckpointError(file, "records no identity (written by an older dehvf?); remove it or drop --resume");
  if (resumeKey(was) !== resumeKey(s.identity)) {
    throw new UserError(
      `${label}: the checkpoint ${file} was made from something else (${identityChanges(was, s.identity, "resume").join("; ")}); to start over, drop --resume`,
    );
  }
  const step = checkedStep(file, meta.step, cfg.steps);
  const { tensors } = await readChecked(file, { expected: state, exact: true });
  for (const [k, v] of tensors) params.set(k, v);
  const changed = identityChanges(was, s.identity);
  ctx.say(`${label}: resuming at step ${step} of ${cfg.steps}${changed.length ? ` (changed since the checkpoint: ${changed.join("; ")})` : ""}`);
  return step;
}
