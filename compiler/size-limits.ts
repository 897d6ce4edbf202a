import { DehvfError, type Diagnostic } from "../grammar/diagnostics.ts";
import type { Span } from "../grammar/source.ts";
import { type Shape, shapeEval, shapeStr, symbolsOf } from "./dims.ts";
import type { CompiledModel } from "./elaborate.ts";
import { topoOrder } from "./graph.ts";
import type { Node } from "./ir.ts";
import type { MemoryPlan } from "./memory-plan.ts";
import type { Schedule } from "./schedule.ts";
import { splittable } from "./passes/split-params.ts";
import { numel } from "./tensor.ts";

/*
 * Work that cannot fit is refused before anything is allocated or compiled, with what
 * does not fit, where it comes from and what to change: otherwise it fails deep in Dawn,
 * in a typed-array constructor or in the kernel's OOM killer, which reads as a bug.
 */

/** The per-buffer limits of a WebGPU device. */
export interface DeviceLimits {
  /** maxStorageBufferBindingSize: the most bytes one kernel binding may span */
  readonly maxBindingBytes: number;
  /** maxBufferSize: the largest buffer the device creates */
  readonly maxBufferBytes: number;
}

/** What the machine offers to tensors held on the host (runtime/host-limits.ts). */
export interface HostLimits {
  /** physical memory */
  readonly bytes: number;
  /** elements one typed array may hold */
  readonly maxElements: number;
}

export interface SizeBudget {
  /** the host holding the float64 parameters, inputs and outputs; omitted where nothing is allocated (compile) */
  readonly host?: HostLimits;
  /** the float64 interpreter runs the forward on the host: its live intermediates count too */
  readonly interp?: boolean;
  /** a training step: AdamW's two moments of every trainable parameter are held too */
  readonly training?: boolean;
  /** the WebGPU device that runs it */
  readonly device?: DeviceLimits;
  /** how the user sets each run-time dimension, for the advice (default: --batch, --seq, --dim NAME=n) */
  readonly dimFlags?: Readonly<Record<string, string>>;
}

const FLOAT64 = 8;
const DEVICE_ELEMENT = 4;
/** Past this many over-limit tensors the rest are counted, not listed (a 7B model has a hundred). */
const LISTED = 3;

export function fmtBytes(bytes: number): string {
  const units = ["KiB", "MiB", "GiB", "TiB", "PiB"];
  if (bytes < 1024) return `${bytes} bytes`;
  let v = bytes / 1024;
  let i = 0;
  for (; v >= 1024 && i < units.length - 1; i++) v /= 1024;
  return `${v.toFixed(1)} ${units[i]}`;
}

/** A tensor whose size is checked: what it is, what to call it, its declared and actual shape, where it comes from. */
interface Sized {
  readonly kind: "parameter" | "input" | "output" | "intermediate";
  readonly what: string;
  readonly shape: Shape;
  readonly values: readonly number[];
  readonly span?: Span;
  /** bytes on the device, where not 4 an element (an f16 weight) */
  readonly bytes?: number;
}

const sized = (kind: Sized["kind"], what: string, shape: Shape, dims: Readonly<Record<string, number>>, span?: Span): Sized => ({
  kind,
  what,
  shape,
  values: shapeEval(shape, dims),
  span,
});
const elements = (ts: readonly Sized[]) => ts.reduce((a, t) => a + numel(t.values), 0);

function shapeText(t: Sized): string {
  const declared = shapeStr(t.shape);
  const actual = `[${t.values.join(", ")}]`;
  return declared === actual ? declared : `${declared} (here ${actual})`;
}

/** The parameters, inputs and outputs: what every backend holds for the whole run. */
function residentTensors(model: CompiledModel, dims: Readonly<Record<string, number>>): Sized[] {
  const at = (n: Node) => model.graph.provenance.get(n.id);
  return [
    ...model.params.map((p) => sized("parameter", `parameter \`${p.name}\``, p.shape, dims, p.decl.span)),
    ...model.inputs.map((i) => sized("input", `input \`${i.name}\``, i.shape, dims, at(i.node))),
    ...model.outputs.map((o) => sized("output", `output \`${o.name}\``, o.node.shape, dims, at(o.node))),
  ];
}

/** What to change: the run-time dimensions the size grows with, else `otherwise`. */
function advice(syms: readonly string[], budget: SizeBudget, otherwise: string): string {
  if (!syms.length) return otherwise;
  const flag = (s: string) => budget.dimFlags?.[s] ?? (s === "B" ? "--batch" : s === "T" ? "--seq" : `--dim ${s}=n`);
  return `it grows with ${syms.join(" and ")}: use a smaller ${syms.map(flag).join(" or ")}, or ${otherwise}`;
}

/** The binding to a kernel is the tighter of the two limits on lavapipe and most GPUs. */
function deviceLimit(d: DeviceLimits): { bytes: number; name: string } {
  return d.maxBindingBytes <= d.maxBufferBytes
    ? { bytes: d.maxBindingBytes, name: "one storage binding (maxStorageBufferBindingSize)" }
    : { bytes: d.maxBufferBytes, name: "one buffer (maxBufferSize)" };
}

function overDeviceLimit(tensors: readonly Sized[], device: DeviceLimits, budget: SizeBudget): Diagnostic[] {
  const limit = deviceLimit(device);
  return tensors
    .filter((t) => (t.bytes ?? numel(t.values) * DEVICE_ELEMENT) > limit.bytes)
    .map(
      (t): Diagnostic => ({
        phase: "input",
        message: `${t.what} ${shapeText(t)} needs ${fmtBytes(t.bytes ?? numel(t.values) * DEVICE_ELEMENT)} on the device, over its ${fmtBytes(limit.bytes)} limit for ${limit.name}`,
        span: t.span,
        hint: advice(symbolsOf(t.shape), budget, "run on a device with a larger limit (only frozen weights are split across buffers)"),
      }),
    );
}

function overTypedArray(tensors: readonly Sized[], host: HostLimits, budget: SizeBudget): Diagnostic[] {
  return tensors
    .filter((t) => numel(t.values) > host.maxElements)
    .map(
      (t): Diagnostic => ({
        phase: "input",
        message: `${t.what} ${shapeText(t)} has ${numel(t.values).toLocaleString("en-US")} elements, more than one array on the host holds (${host.maxElements.toLocaleString("en-US")})`,
        span: t.span,
        hint: advice(symbolsOf(t.shape), budget, "split it in the model"),
      }),
    );
}

/**
 * The interpreter's peak of live intermediates, in elements: it frees each value after
 * its last reader (compiler/interpret.ts), and parameters, inputs and reshapes share
 * their source's data. `largest`: the biggest single intermediate.
 */
function interpreterPeak(model: CompiledModel, dims: Readonly<Record<string, number>>): { peak: number; largest?: Sized } {
  const roots = model.outputs.map((o) => o.node);
  const order = topoOrder(roots);
  const uses = new Map<Node, number>();
  for (const n of [...order.flatMap((n) => n.src), ...roots]) uses.set(n, (uses.get(n) ?? 0) + 1);
  const owned = new Map(order.map((n) => [n, n.op === "param" || n.op === "input" || n.op === "reshape" ? 0 : numel(shapeEval(n.shape, dims))]));
  let live = 0;
  let peak = 0;
  let largest = order[0];
  for (const n of order) {
    live += owned.get(n)!;
    peak = Math.max(peak, live);
    if (owned.get(n)! > owned.get(largest)!) largest = n;
    for (const s of n.src) {
      const left = uses.get(s)! - 1;
      uses.set(s, left);
      if (left === 0) live -= owned.get(s)!;
    }
  }
  if (!largest || !owned.get(largest)) return { peak };
  const where = model.graph.instancePath.get(largest.id);
  return {
    peak,
    largest: sized(
      "intermediate",
      `intermediate \`${largest.op}\`${where ? ` in \`${where}\`` : ""}`,
      largest.shape,
      dims,
      model.graph.provenance.get(largest.id),
    ),
  };
}

function overHostMemory(
  model: CompiledModel,
  dims: Readonly<Record<string, number>>,
  host: HostLimits,
  budget: SizeBudget,
  resident: readonly Sized[],
  activations: number,
): Diagnostic[] {
  // checkpoint weights (`from "..."`) are streamed to the device as float32: on the host only for the interpreter
  const onHost = new Set(model.params.filter((p) => budget.interp || !p.source).map((p) => `parameter \`${p.name}\``));
  const params = elements(resident.filter((t) => t.kind === "parameter" && onHost.has(t.what))) * FLOAT64;
  const state = budget.training ? 2 * model.params.filter((p) => p.trainable).reduce((a, p) => a + numel(p.shape), 0) * FLOAT64 : 0;
  const io = elements(resident.filter((t) => t.kind !== "parameter")) * FLOAT64;
  const live = activations * FLOAT64;
  const total = params + state + io + live;
  if (total <= host.bytes) return [];
  const parts = [
    `parameters ${fmtBytes(params)}`,
    state && `AdamW state ${fmtBytes(state)}`,
    `inputs and outputs ${fmtBytes(io)}`,
    live && `intermediates ${fmtBytes(live)} at the peak`,
  ].filter(Boolean);
  const at = model.symbols.map((s) => `${s}=${dims[s]}`).join(", ");
  const job = budget.interp ? `running \`${model.name}\` in the float64 interpreter` : `holding \`${model.name}\`'s tensors in float64`;
  const fixed = params + state > host.bytes;
  return [
    {
      phase: "input",
      message: `${job}${at ? ` at ${at}` : ""} needs about ${fmtBytes(total)} of host memory (${parts.join(", ")}), more than this machine's ${fmtBytes(host.bytes)}`,
      hint: fixed
        ? "dehvf keeps every parameter in float64 on the host: this model needs a machine with more memory"
        : advice(model.symbols, budget, budget.interp ? "--backend webgpu (float32, on the device)" : "a machine with more memory"),
    },
  ];
}

function dimProblems(model: CompiledModel, dims: Readonly<Record<string, number>>): Diagnostic[] {
  return model.symbols
    .filter((s) => !(Number.isSafeInteger(dims[s]) && dims[s] >= 1))
    .map(
      (s): Diagnostic => ({
        phase: "input",
        message: `run-time dimension \`${s}\` of \`${model.name}\` is ${dims[s]}; it must be a whole number of at least 1`,
      }),
    );
}

/** Throws the problems, if any: each kind listed up to LISTED times, the rest counted. */
function refuse(model: CompiledModel, ...kinds: Diagnostic[][]): void {
  const shown = kinds.flatMap((problems) => {
    const listed = problems.slice(0, LISTED);
    const more = problems.length - listed.length;
    if (more) listed[listed.length - 1] = { ...listed[listed.length - 1], notes: [`${more} more tensors like it`] };
    return listed;
  });
  if (!shown.length) return;
  const err = new DehvfError(shown);
  throw model.program ? err.withSources(model.program.sources) : err;
}

/**
 * Refuses to run `model` at `dims` where it cannot fit: on the host (float64 parameters,
 * inputs, outputs and, for the interpreter, its live intermediates, against physical
 * memory and the largest typed array) and on the device (every parameter, input and
 * output against the per-buffer limits; intermediates are checked when the plan is built,
 * checkPlanBuffers). Cheap: no tensor is allocated, nothing is scheduled.
 */
export function checkSizes(model: CompiledModel, dims: Readonly<Record<string, number>>, budget: SizeBudget): void {
  refuse(model, dimProblems(model, dims));
  const resident = residentTensors(model, dims);
  // frozen weights past the limit are split into blocks when planned (compiler/passes/split-params.ts)
  const split = new Set(model.params.filter(splittable).map((p) => `parameter \`${p.name}\``));
  const device = budget.device
    ? overDeviceLimit(
        resident.filter((t) => !split.has(t.what)),
        budget.device,
        budget,
      )
    : [];
  if (!budget.host) return refuse(model, device);
  const interp = budget.interp ? interpreterPeak(model, dims) : { peak: 0 };
  refuse(
    model,
    overHostMemory(model, dims, budget.host, budget, resident, interp.peak),
    overTypedArray(interp.largest ? [...resident, interp.largest] : resident, budget.host, budget),
    device,
  );
}

/** The same device limits for every buffer of a plan, intermediates included; buildPlan calls it before generating any kernel. */
export function checkPlanBuffers(model: CompiledModel, sched: Schedule, memory: MemoryPlan, device: DeviceLimits): void {
  const writer = (n: Node) => sched.kernels.findIndex((k) => k.output === n || k.also?.includes(n));
  const describe = (n: Node): Sized => {
    const name = (n.attrs as { name?: string }).name;
    const path = model.graph.instancePath.get(n.id);
    const [kind, what] =
      n.op === "param"
        ? (["parameter", `parameter \`${name}\``] as const)
        : n.op === "input"
          ? (["input", `input \`${name}\``] as const)
          : (["intermediate", `\`${n.op}\` result of kernel #${writer(n)}${path ? ` in \`${path}\`` : ""}`] as const);
    // parameters and inputs have slots of their own, sized as stored (f16 weights: 2 bytes an element)
    const bytes = n.op === "param" || n.op === "input" ? memory.slotOf.get(n)!.size : undefined;
    return { kind, what, shape: n.shape, values: sched.shapes.get(n)!, span: model.graph.provenance.get(n.id), ...(bytes !== undefined && { bytes }) };
  };
  const tensors = memory.slots.flatMap((sl) => sl.tensors).map(describe);
  refuse(model, overDeviceLimit(tensors, device, {}));
}
