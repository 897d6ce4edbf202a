import type { Command } from "commander";
import { DehvfError, UserError } from "../../grammar/diagnostics.ts";
import { opHistogram, printGraph } from "../../compiler/print-graph.ts";
import { runPipeline, STAGES } from "../../compiler/pipeline.ts";
import type { SourceMap } from "../../grammar/diagnostics.ts";
import type { CompiledModel } from "../../compiler/elaborate.ts";
import { type MemoryCategory, memoryReport } from "../../lowering/memory-report.ts";
import { buildPlan, type Plan, type PlanTarget, planTextureBytes, WEBGPU_DEFAULT_TARGET, type WeightStorage } from "../../lowering/plan.ts";
import { buildTrainGraph } from "../../compiler/train-graph.ts";
import { SCHEDULE_STAGES } from "../../compiler/schedule.ts";
import { dumpSchedule } from "../../compiler/schedule/dump.ts";
import type { ScheduleState } from "../../compiler/schedule/state.ts";
import { checkSizes } from "../../compiler/size-limits.ts";
import { acquireGpu, NoAdapterError } from "../../runtime/device.ts";
import { planTarget } from "../../runtime/webgpu-backend.ts";
import { emitTs } from "./emit-ts.ts";
import { type DimOptions, dimOptions, loadModel, resolveDims, WEIGHTS_HELP, weightsOption } from "./load.ts";

const EMITS = ["summary", "graph", "plan", "wgsl", "ts"] as const;

const mib = (b: number) => `${(b / 2 ** 20).toFixed(2)} MiB`;

/** The plan needs device limits; without an adapter, WebGPU's guaranteed defaults stand in. */
async function target(): Promise<{ target: PlanTarget; device: string; release: () => void }> {
  try {
    const gpu = await acquireGpu();
    return { target: planTarget(gpu), device: gpu.info.description || gpu.info.vendor, release: () => gpu.destroy() };
  } catch (e) {
    if (!(e instanceof NoAdapterError)) throw e;
    return { target: WEBGPU_DEFAULT_TARGET, device: "no adapter: WebGPU default limits", release: () => {} };
  }
}

function printPlan(plan: Plan, model: CompiledModel, sources: SourceMap, device: string): string {
  const where = (k: Plan["kernels"][number]) =>
    k.spans
      .map((sp) => {
        const p = sources.get(sp.file)?.position(sp.start);
        return p ? `${sp.file}:${p.line}:${p.col}` : sp.file;
      })
      .join(" ← ");
  const lines = [
    `plan for ${plan.model} at ${Object.entries(plan.dims)
      .map(([k, v]) => `${k}=${v}`)
      .join(" ")} on ${device}`,
    "",
  ];
  const vw = Math.max(12, ...plan.kernels.map((k) => k.variant.length));
  const pw = Math.max(8, ...plan.kernels.map((k) => k.path.length));
  lines.push(
    `${"#".padStart(5)}  ${"kernel".padEnd(14)} ${"variant".padEnd(vw)} ${"grid".padEnd(12)} ${"MFLOP".padStart(9)} ${"KiB".padStart(9)} ${"ops".padStart(4)}  ${"instance".padEnd(pw)}  from`,
  );
  for (const k of plan.kernels)
    lines.push(
      `${String(k.index).padStart(5)}  ${k.label.padEnd(14)} ${k.variant.padEnd(vw)} ${k.workgroups.join("x").padEnd(12)} ${(k.flops / 1e6).toFixed(3).padStart(9)} ${(k.bytes / 1024).toFixed(1).padStart(9)} ${String(k.fused).padStart(4)}  ${(k.path || "model").padEnd(pw)}  ${where(k)}`,
    );
  const flops = plan.kernels.reduce((a, k) => a + k.flops, 0);
  const bytes = plan.kernels.reduce((a, k) => a + k.bytes, 0);
  const m = plan.memory;
  lines.push(
    "",
    `kernels        ${plan.kernels.length} for ${plan.irNodes} IR nodes (${(plan.irNodes / Math.max(1, plan.kernels.length)).toFixed(1)}x fewer)`,
    `work           ${(flops / 1e9).toFixed(3)} GFLOP, ${mib(bytes)} moved`,
    `memory         intermediates: peak ${mib(m.pooledBytes)} planned vs ${mib(m.naiveBytes)} naive (${((100 * m.pooledBytes) / Math.max(1, m.naiveBytes)).toFixed(1)}%) in ${m.slots.filter((s) => s.role === "pooled").length} pooled buffers, ${m.inPlace.size} in-place kernel${m.inPlace.size === 1 ? "" : "s"}`,
    `               resident (inputs, parameters, outputs): ${mib(m.residentBytes)}${plan.textures.length ? `, plus ${mib(planTextureBytes(plan))} in ${plan.textures.length} texture${plan.textures.length === 1 ? "" : "s"} of constant matmul B operands` : ""}`,
  );
  const r = memoryReport(plan, model);
  const w = Math.max(...[...r.device, ...r.host].map((c) => c.name.length));
  const row = (c: MemoryCategory) => `  ${c.name.padEnd(w)}  ${mib(c.bytes).padStart(14)}  ${String(c.count).padStart(5)}`;
  lines.push("", `device memory  ${mib(r.deviceBytes)}`, ...r.device.map(row), `host memory to load  ${mib(r.hostBytes)}`, ...r.host.map(row));
  return lines.join("\n");
}

export function registerCompile(program: Command): void {
  dimOptions(program.command("compile"))
    .argument("<file>", ".dehvf model file")
    .option("-m, --model <name>", "model to compile (default: the file's first model)")
    .option("--emit <what>", `what to print: ${EMITS.join(", ")} (ts: a typed module and its weights, written to -o DIR)`, "summary")
    .option("-o, --out <dir>", "with --emit ts: the directory to write the module and its weights to")
    .option(
      "--tap <path>",
      "with --emit ts: also return this tap's values (e.g. dehvf.alpha); repeatable",
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .option("--checkpoint <path>", "with --emit ts: trained weights (a stage directory of `dehvf train` or a .safetensors file) for the weights file")
    .option("--train", "the training step (loss, backward, AdamW over the trainable parameters) instead of the forward")
    .option("--weights <f16|f32>", `${WEIGHTS_HELP} (default f32)`, weightsOption)
    .option(
      "--recompute",
      "with --train: recompute each repeated block (a transformer layer) in the backward instead of keeping its activations (less memory, about one more forward)",
    )
    .option(
      "--dump-after <stage>",
      `also print the graph after a pass (${STAGES.join(", ")}), or the buffers and kernels after a scheduler pass (${SCHEDULE_STAGES.join(", ")}); repeatable`,
      (v: string, acc: string[]) => [...acc, v],
      [] as string[],
    )
    .description("compile a model through the pass pipeline and print the IR")
    .action(
      async (
        file: string,
        opts: {
          model?: string;
          emit: string;
          dumpAfter: string[];
          train?: boolean;
          recompute?: boolean;
          weights?: WeightStorage;
          out?: string;
          tap: string[];
          checkpoint?: string;
        } & DimOptions,
        cmd: Command,
      ) => {
        if (opts.recompute && !opts.train) throw new UserError("--recompute applies to the training step: add --train");
        if (!(EMITS as readonly string[]).includes(opts.emit))
          throw new DehvfError([{ phase: "input", message: `unknown --emit "${opts.emit}"`, hint: `choose one of ${EMITS.join(", ")}` }]);
        for (const s of opts.dumpAfter)
          if (!STAGES.includes(s) && !SCHEDULE_STAGES.includes(s))
            throw new DehvfError([
              {
                phase: "input",
                message: `unknown stage "${s}" for --dump-after`,
                hint: `graph passes: ${STAGES.join(", ")}; scheduler passes: ${SCHEDULE_STAGES.join(", ")}`,
              },
            ]);
        if (opts.emit === "ts") {
          if (opts.train) throw new UserError("--emit ts emits the forward: leave out --train");
          // an app runs one example at a time, in a window long enough for a question and its answer
          const given = (o: string) => cmd.getOptionValueSource(o) !== "default";
          const dims = { dim: opts.dim, batch: given("batch") ? opts.batch : 1, seq: given("seq") ? opts.seq : 64 };
          const command = ["dehvf", ...process.argv.slice(2)].join(" ");
          return emitTs(file, { model: opts.model, out: opts.out, taps: opts.tap, checkpoint: opts.checkpoint, dims, command });
        }
        if (opts.out || opts.tap.length || opts.checkpoint) throw new UserError("-o, --tap and --checkpoint go with --emit ts");
        // --train: the training step (forward, loss, backward, AdamW) as one plan
        const step = opts.train ? buildTrainGraph(loadModel(file, opts.model, { training: true }), undefined, { recompute: opts.recompute }) : undefined;
        const m = step?.model ?? loadModel(file, opts.model);
        const sources = m.program.sources;
        const roots = runPipeline(m.outputs, m.graph, (stage, rs) => {
          if (opts.dumpAfter.includes(stage)) process.stdout.write(`# ---- after ${stage} ----\n${printGraph(rs, m.graph.provenance, sources)}\n`);
        });
        const onSchedulePass = (pass: string, state: ScheduleState) => {
          if (opts.dumpAfter.includes(pass))
            process.stdout.write(`# ---- after scheduler pass ${pass} ----\n${dumpSchedule(state, m.graph.provenance, sources)}\n`);
        };
        const planOptions = { weights: opts.weights, onSchedulePass, ...(step ? { mutableParams: new Set(step.updates.map((u) => u.to)) } : {}) };
        // scheduler dumps without a device: planned for WebGPU's default limits
        if (opts.emit !== "plan" && opts.emit !== "wgsl" && opts.dumpAfter.some((s) => SCHEDULE_STAGES.includes(s)))
          buildPlan(m, resolveDims(m, opts), WEBGPU_DEFAULT_TARGET, roots, { ...planOptions, weights: undefined });
        if (opts.emit === "plan" || opts.emit === "wgsl") {
          const dims = resolveDims(m, opts);
          const t = await target();
          try {
            checkSizes(m, dims, { device: t.target });
            if (opts.weights === "f16" && !t.target.shaderF16) throw new UserError(`--weights f16 needs shader-f16, which ${t.device} does not offer`);
            // the step overwrites what it updates: those are never read through a texture
            const plan = buildPlan(m, dims, t.target, roots, planOptions);
            if (opts.emit === "plan") process.stdout.write(`${printPlan(plan, m, sources, t.device)}\n`);
            else
              for (const k of plan.kernels)
                process.stdout.write(`// ---- kernel #${k.index} ${k.label} (${k.variant}) grid ${k.workgroups.join("x")}\n${k.wgsl}\n`);
          } finally {
            t.release();
          }
        } else if (opts.emit === "graph") process.stdout.write(`${printGraph(roots, m.graph.provenance, sources)}\n`);
        else {
          const h = opHistogram(roots.map((r) => r.node));
          const n = [...h.values()].reduce((a, b) => a + b, 0);
          process.stdout.write(`model ${m.name}: ${n} IR nodes (${m.graph.size} built, shared by hash-consing)\n`);
          process.stdout.write(`${[...h].map(([op, c]) => `  ${op.padEnd(8)} ${c}`).join("\n")}\n`);
        }
      },
    );
}
