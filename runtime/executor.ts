import type { SourceMap } from "../grammar/diagnostics.ts";
import type { PlanBinding, PlanKernel, PlanTensor, RunnablePlan } from "../lowering/plan.ts";
import { numel, type Tensor } from "../compiler/tensor.ts";
import type { StreamedParam } from "../io/checkpoints/load.ts";
import { type Gpu, spinBriefly } from "./gpu.ts";
import { createOperandTexture, type DeviceTexture, encodeFills, fillPipeline } from "./matmul-run.ts";
import { fromHalf, toHalf } from "./half.ts";

/** A generated shader that the device rejected: shows it numbered, with its DSL origin. */
export class ShaderError extends Error {
  constructor(kernel: PlanKernel, messages: string[], sources?: SourceMap) {
    const numbered = kernel.wgsl
      .split("\n")
      .map((l, i) => `${String(i + 1).padStart(4)} | ${l}`)
      .join("\n");
    const origin = kernel.spans
      .map((s) => {
        const p = sources?.get(s.file)?.position(s.start);
        return p ? `${s.file}:${p.line}:${p.col}` : s.file;
      })
      .join(", ");
    super(`WGSL for kernel #${kernel.index} (${kernel.label}${origin ? `, from ${origin}` : ""}) failed to compile:\n${messages.join("\n")}\n${numbered}`);
    this.name = "ShaderError";
  }
}

export interface RunOptions {
  /** names of the outputs to read back (default: all) */
  readonly read?: readonly string[];
  /** output → parameter (or persistent input) copies after the kernels: a training step's updates, a KV cache's */
  readonly copies?: readonly { readonly from: string; readonly to: string }[];
}

export interface ExecutorOptions {
  /** inputs whose buffers keep their contents between runs (state: KV caches); a run need not feed them */
  readonly persistent?: readonly string[];
  /** use another executor's buffers for these inputs and parameters (same name, shape and layout): a prefill and a decode plan share the model and its state */
  readonly shareWith?: PlanExecutor;
}

/**
 * Wraps the creation of a plan's pipelines, given how many distinct ones it compiles (to
 * say so while it runs); `work` reports how many the driver has compiled so far.
 */
export type CompileHook = <T>(work: (compiled: (n: number) => void) => Promise<T>, pipelines: number) => Promise<T>;

/**
 * Creates the executor, through `hook` when given. A plan without state is also warmed
 * up: each distinct pipeline dispatched once on one workgroup, so drivers that compile a
 * shader at its first dispatch (lavapipe: 0.1–8 s each) do so here, counted, rather than
 * silently inside the first step.
 */
export function createExecutor(
  gpu: Gpu,
  plan: RunnablePlan,
  sources: SourceMap | undefined,
  hook?: CompileHook,
  opts: ExecutorOptions = {},
): Promise<PlanExecutor> {
  const stateless = !opts.persistent?.length && !opts.shareWith;
  const work = async (compiled: (n: number) => void) => {
    const ex = await PlanExecutor.create(gpu, plan, sources, opts);
    if (stateless) await ex.warmUp(compiled);
    return ex;
  };
  return hook ? hook(work, new Set(plan.kernels.map((k) => k.wgsl)).size) : work(() => {});
}

/** Pipelines keyed by WGSL text: identical kernels (e.g. every layer's) compile once. */
const pipelineCache = new WeakMap<GPUDevice, Map<string, Promise<GPUComputePipeline>>>();

async function pipelineFor(device: GPUDevice, k: PlanKernel, sources?: SourceMap): Promise<GPUComputePipeline> {
  let cache = pipelineCache.get(device);
  if (!cache) pipelineCache.set(device, (cache = new Map()));
  const key = k.wgsl;
  let p = cache.get(key);
  if (!p) {
    p = (async () => {
      device.pushErrorScope("validation");
      const module = device.createShaderModule({ code: k.wgsl });
      const info = await module.getCompilationInfo();
      const errors = info.messages.filter((m) => m.type === "error").map((m) => `line ${m.lineNum}:${m.linePos}: ${m.message}`);
      const scopeError = await device.popErrorScope();
      if (errors.length || scopeError) throw new ShaderError(k, errors.length ? errors : [scopeError!.message], sources);
      const layout = device.createBindGroupLayout({ entries: k.bindings.map(layoutEntry) });
      return device.createComputePipelineAsync({
        layout: device.createPipelineLayout({ bindGroupLayouts: [layout] }),
        compute: { module, entryPoint: "main" },
      });
    })();
    cache.set(key, p);
  }
  return p;
}

/** A storage buffer, or for a texture binding (sg-texture's B) a float texture read with textureLoad. */
function layoutEntry(b: PlanBinding): GPUBindGroupLayoutEntry {
  const visibility = GPUShaderStage.COMPUTE;
  if (b.texture !== undefined) return { binding: b.binding, visibility, texture: { sampleType: "unfilterable-float" } };
  return { binding: b.binding, visibility, buffer: { type: b.write ? "storage" : "read-only-storage" } };
}

/**
 * The plan's textures on the device, each with its fill from its parameter's buffer.
 * Kernels with the same fill WGSL (same-shaped weights of every layer) share a pipeline.
 */
async function createTextures(device: GPUDevice, plan: RunnablePlan, buffers: readonly GPUBuffer[]): Promise<DeviceTexture[]> {
  const pipelines = new Map<string, Promise<GPUComputePipeline>>();
  const pipeline = (t: RunnablePlan["textures"][number]) => {
    let p = pipelines.get(t.layout.fill.wgsl);
    if (!p) pipelines.set(t.layout.fill.wgsl, (p = fillPipeline(device, t.layout)));
    return p;
  };
  return Promise.all(plan.textures.map(async (t) => createOperandTexture(device, t.layout, buffers[t.slot], await pipeline(t), `texture:${t.param}`)));
}

function transpose2d(t: Tensor): Tensor {
  const [r, c] = t.shape;
  const out = new Float64Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = t.data[i * c + j];
  return { shape: [c, r], data: out };
}

function transposeF32(data: Float32Array, shape: readonly number[]): Float32Array {
  const [r, c] = shape;
  const out = new Float32Array(r * c);
  for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) out[j * r + i] = data[i * c + j];
  return out;
}

const align4 = (n: number) => Math.max(4, Math.ceil(n / 4) * 4);

/** f16 values padded to whole 4-byte words (writeBuffer writes multiples of 4 bytes) */
function padded<T extends Float32Array | Int32Array | Uint16Array>(data: T): T | Uint16Array {
  if (!(data instanceof Uint16Array) || data.length % 2 === 0) return data;
  const out = new Uint16Array(data.length + 1);
  out.set(data);
  return out;
}

/** A tensor's values as its buffer stores them; `name` names it in an f16 range error. */
function toTyped(t: Tensor, dtype: PlanTensor["dtype"], name: string): Float32Array | Int32Array | Uint16Array {
  return dtype === "i32" ? Int32Array.from(t.data) : dtype === "f16" ? toHalf(t.data, name) : Float32Array.from(t.data);
}

const elementBytes = (t: PlanTensor) => (t.dtype === "f16" ? 2 : 4);

/** The parameter a plan tensor takes its values from: itself, or the weight it is a block of. */
const sourceName = (p: PlanTensor) => p.part?.of ?? p.name;

/** A parameter's values for plan tensor `p`: all of them, or its block's rows. */
function rowsFor<T extends Float64Array | Float32Array>(p: PlanTensor, data: T, shape: readonly number[]): { data: T; shape: readonly number[] } {
  if (!p.part) return { data, shape };
  const row = numel(shape.slice(1));
  return { data: data.subarray(p.part.start * row, p.part.end * row) as T, shape: [p.part.end - p.part.start, ...shape.slice(1)] };
}

/**
 * Owns the device buffers of one plan: one per memory slot (pooled intermediates share),
 * parameters uploaded once and kept on the device. A run is one command buffer.
 */
export class PlanExecutor {
  private constructor(
    private readonly gpu: Gpu,
    readonly plan: RunnablePlan,
    private readonly buffers: GPUBuffer[],
    private readonly pipelines: GPUComputePipeline[],
    private readonly bindGroups: GPUBindGroup[],
    private readonly textures: DeviceTexture[],
    private readonly persistent: ReadonlySet<string>,
    /** slots whose buffers belong to another executor (destroyed by it) */
    private readonly borrowed: ReadonlySet<number>,
    private readonly sharedWith?: PlanExecutor,
  ) {}

  static async create(gpu: Gpu, plan: RunnablePlan, sources?: SourceMap, opts: ExecutorOptions = {}): Promise<PlanExecutor> {
    const { device } = gpu;
    const borrowed = new Map<number, GPUBuffer>();
    const other = opts.shareWith;
    if (other) {
      const same = (a: PlanTensor, b: PlanTensor) =>
        a.shape.join() === b.shape.join() && a.dtype === b.dtype && Boolean(a.transposed) === Boolean(b.transposed);
      for (const [mine, theirs] of [
        [plan.inputs, other.plan.inputs],
        [plan.params, other.plan.params],
      ] as const)
        for (const t of mine) {
          const o = theirs.find((x) => x.name === t.name);
          if (o && same(t, o)) borrowed.set(t.slot, other.buffers[o.slot]);
        }
    }
    const buffers = plan.memory.slots.map(
      (s) =>
        borrowed.get(s.id) ??
        device.createBuffer({
          size: align4(s.size),
          usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          label: `slot${s.id}:${s.role}`,
        }),
    );
    const pipelines = await Promise.all(plan.kernels.map((k) => pipelineFor(device, k, sources)));
    const textures = await createTextures(device, plan, buffers);
    const bindGroups = plan.kernels.map((k, i) =>
      device.createBindGroup({
        layout: pipelines[i].getBindGroupLayout(0),
        entries: k.bindings.map((b) => ({ binding: b.binding, resource: b.texture === undefined ? { buffer: buffers[b.slot] } : textures[b.texture].view })),
      }),
    );
    return new PlanExecutor(gpu, plan, buffers, pipelines, bindGroups, textures, new Set(opts.persistent ?? []), new Set(borrowed.keys()), other);
  }

  private write(t: PlanTensor, value: Tensor): void {
    const want = t.shape.join(",");
    if (value.shape.join(",") !== want) throw new Error(`\`${t.name}\` has shape [${value.shape.join(", ")}], the plan expects [${t.shape.join(", ")}]`);
    this.gpu.device.queue.writeBuffer(this.buffers[t.slot], 0, padded(toTyped(t.transposed ? transpose2d(value) : value, t.dtype, t.name)));
  }

  /**
   * Uploads parameter values; every parameter of the plan must have one unless `partial`.
   * The textures of the parameters written are refilled right behind the writes (queue
   * order), so no later run reads a stale copy.
   */
  writeParams(params: ReadonlyMap<string, Tensor>, opts: { partial?: boolean } = {}): void {
    const written = new Set<string>();
    for (const p of this.plan.params) {
      const whole = params.get(sourceName(p));
      const v = whole && (rowsFor(p, whole.data, whole.shape) as Tensor);
      // a borrowed buffer is written by its owner; its textures here still refill
      if (v && !this.borrowed.has(p.slot)) this.write(p, v);
      if (v || this.borrowed.has(p.slot)) written.add(p.name);
      else if (!opts.partial) throw new Error(`no value for parameter \`${p.name}\``);
    }
    if (!this.plan.textures.some((t) => written.has(t.param))) return;
    const enc = this.gpu.device.createCommandEncoder();
    this.encodeRefills(enc, written);
    this.gpu.device.queue.submit([enc.finish()]);
  }

  /**
   * Streams parameters into their buffers one float32 tensor at a time (checkpoint weights:
   * never float64 on the host, never all at once); `rest` supplies the others. Together they
   * must cover the plan; names the plan does not use are skipped.
   */
  async writeParamsFrom(source: AsyncIterable<StreamedParam>, rest: ReadonlyMap<string, Tensor> = new Map()): Promise<void> {
    // a weight split into blocks feeds each of them
    const byName = new Map<string, PlanTensor[]>();
    for (const p of this.plan.params) byName.set(sourceName(p), [...(byName.get(sourceName(p)) ?? []), p]);
    const written = new Set<string>();
    for await (const v of source) {
      for (const p of byName.get(v.name) ?? []) {
        if (this.borrowed.has(p.slot)) continue;
        const block = rowsFor(p, v.data, v.shape);
        if (block.shape.join(",") !== p.shape.join(","))
          throw new Error(`\`${p.name}\` has shape [${block.shape.join(", ")}], the plan expects [${p.shape.join(", ")}]`);
        const data = p.transposed ? transposeF32(block.data, block.shape) : block.data;
        this.gpu.device.queue.writeBuffer(this.buffers[p.slot], 0, p.dtype === "f16" ? padded(toHalf(data, p.name)) : data);
        written.add(p.name);
      }
    }
    for (const p of this.plan.params) {
      if (written.has(p.name)) continue;
      if (this.borrowed.has(p.slot)) {
        written.add(p.name);
        continue;
      }
      const v = rest.get(sourceName(p));
      if (!v) throw new Error(`no value for parameter \`${sourceName(p)}\``);
      this.write(p, rowsFor(p, v.data, v.shape) as Tensor);
      written.add(p.name);
    }
    if (!this.plan.textures.length) return;
    const enc = this.gpu.device.createCommandEncoder();
    this.encodeRefills(enc, written);
    this.gpu.device.queue.submit([enc.finish()]);
  }

  /** Encodes the fills of the textures copied from `params` (names), if any. */
  private encodeRefills(enc: GPUCommandEncoder, params: ReadonlySet<string>): void {
    const fills = this.plan.textures.flatMap((t, i) => (params.has(t.param) ? [this.textures[i].fill] : []));
    if (!fills.length) return;
    const pass = enc.beginComputePass();
    encodeFills(pass, fills);
    pass.end();
  }

  /**
   * Runs the whole plan in one command buffer and reads outputs back (all, or the ones
   * named in `read`). `copies` then overwrite parameters with outputs in the same command
   * buffer: a training step's new weights and optimizer state never leave the device.
   */
  async run(inputs: ReadonlyMap<string, Tensor>, opts: RunOptions = {}): Promise<Tensor[]> {
    const { device } = this.gpu;
    this.writeInputs(inputs);
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    this.plan.kernels.forEach((k, i) => {
      pass.setPipeline(this.pipelines[i]);
      pass.setBindGroup(0, this.bindGroups[i]);
      pass.dispatchWorkgroups(...k.workgroups);
    });
    pass.end();
    const wanted = opts.read ? opts.read.map((name) => this.tensorNamed(this.plan.outputs, name, "output")) : this.plan.outputs;
    const staging = this.stage(enc, wanted);
    for (const c of opts.copies ?? []) {
      const from = this.tensorNamed(this.plan.outputs, c.from, "output");
      const to = this.copyTarget(c.to);
      if (to.tensor.transposed) throw new Error(`parameter \`${c.to}\` is stored transposed; it cannot take an update`);
      // a cache slot written in place: the update already is the state's buffer
      if (this.buffers[from.slot] === to.buffer) continue;
      enc.copyBufferToBuffer(this.buffers[from.slot], 0, to.buffer, 0, align4(numel(to.tensor.shape) * 4));
    }
    // a plan built without the copies' targets in PlanOptions.mutableParams reads them
    // from textures: keep those current too (a training plan has none)
    this.encodeRefills(enc, new Set((opts.copies ?? []).map((c) => c.to)));
    device.queue.submit([enc.finish()]);
    return this.collect(wanted, staging);
  }

  /** Every input the run needs (persistent ones keep their contents unless given). */
  private writeInputs(inputs: ReadonlyMap<string, Tensor>): void {
    for (const i of this.plan.inputs) {
      const v = inputs.get(i.name);
      if (v) this.write(i, v);
      else if (!this.persistent.has(i.name)) throw new Error(`no value for input \`${i.name}\``);
    }
  }

  /** Current values of parameters (e.g. for a checkpoint), in their logical layout. */
  async readParams(names: readonly string[]): Promise<Tensor[]> {
    const ts = names.map((n) => this.tensorNamed(this.plan.params, n, "parameter"));
    const enc = this.gpu.device.createCommandEncoder();
    const staging = this.stage(enc, ts);
    this.gpu.device.queue.submit([enc.finish()]);
    const out = await this.collect(ts, staging);
    return out.map((v, i) => (ts[i].transposed ? transpose2d(v) : v));
  }

  /**
   * Where an update goes: a parameter or persistent input of this plan, or, for state this
   * plan writes without reading (a prefill's cache), the executor it shares buffers with.
   */
  private copyTarget(name: string): { tensor: PlanTensor; buffer: GPUBuffer } {
    const own = this.plan.params.find((x) => x.name === name) ?? this.plan.inputs.find((x) => x.name === name && this.persistent.has(name));
    if (own) return { tensor: own, buffer: this.buffers[own.slot] };
    const theirs = this.sharedWith?.plan.inputs.find((x) => x.name === name);
    if (theirs && this.sharedWith!.persistent.has(name)) return { tensor: theirs, buffer: this.sharedWith!.buffers[theirs.slot] };
    throw new Error(`the plan has no parameter or persistent input named \`${name}\``);
  }

  private tensorNamed(list: readonly PlanTensor[], name: string, what: string): PlanTensor {
    const t = list.find((x) => x.name === name);
    if (!t) throw new Error(`the plan has no ${what} named \`${name}\``);
    return t;
  }

  private stage(enc: GPUCommandEncoder, ts: readonly PlanTensor[]): GPUBuffer[] {
    return ts.map((o) => {
      const size = align4(numel(o.shape) * elementBytes(o));
      const buf = this.gpu.device.createBuffer({ size, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
      enc.copyBufferToBuffer(this.buffers[o.slot], 0, buf, 0, size);
      return buf;
    });
  }

  private async collect(ts: readonly PlanTensor[], staging: readonly GPUBuffer[]): Promise<Tensor[]> {
    spinBriefly();
    const out: Tensor[] = [];
    for (const [k, o] of ts.entries()) {
      const buf = staging[k];
      await buf.mapAsync(GPUMapMode.READ);
      const raw = buf.getMappedRange();
      const n = numel(o.shape);
      const data =
        o.dtype === "i32"
          ? Float64Array.from(new Int32Array(raw, 0, n))
          : o.dtype === "f16"
            ? fromHalf(new Uint16Array(raw, 0, n))
            : Float64Array.from(new Float32Array(raw, 0, n));
      out.push({ shape: o.shape, data });
      buf.unmap();
      buf.destroy();
    }
    return out;
  }

  /**
   * Dispatches the first kernel of each distinct pipeline once, on one workgroup, one
   * submit each (what it writes is scratch: a run overwrites every buffer it reads before
   * reading it, and parameters are never a kernel's output). Drivers that compile at first
   * dispatch do it here; `compiled` hears the count after each.
   */
  async warmUp(compiled: (n: number) => void): Promise<void> {
    const { device } = this.gpu;
    const first = new Map<string, number>();
    this.plan.kernels.forEach((k, i) => {
      if (!first.has(k.wgsl)) first.set(k.wgsl, i);
    });
    let done = 0;
    for (const i of first.values()) {
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      pass.setPipeline(this.pipelines[i]);
      pass.setBindGroup(0, this.bindGroups[i]);
      pass.dispatchWorkgroups(1, 1, 1);
      pass.end();
      device.queue.submit([enc.finish()]);
      await device.queue.onSubmittedWorkDone();
      compiled(++done);
    }
  }

  /** Per-kernel GPU time in ms (timestamp queries, one pass per kernel), for --profile. */
  async profile(inputs: ReadonlyMap<string, Tensor>): Promise<number[]> {
    const { device } = this.gpu;
    if (!this.gpu.hasTimestamps) throw new Error("this adapter has no timestamp-query feature");
    this.writeInputs(inputs);
    const n = this.plan.kernels.length;
    const qs = device.createQuerySet({ type: "timestamp", count: 2 * n });
    const resolve = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC });
    const read = device.createBuffer({ size: 16 * n, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
    const enc = device.createCommandEncoder();
    this.plan.kernels.forEach((k, i) => {
      const pass = enc.beginComputePass({ timestampWrites: { querySet: qs, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 } });
      pass.setPipeline(this.pipelines[i]);
      pass.setBindGroup(0, this.bindGroups[i]);
      pass.dispatchWorkgroups(...k.workgroups);
      pass.end();
    });
    enc.resolveQuerySet(qs, 0, 2 * n, resolve, 0);
    enc.copyBufferToBuffer(resolve, 0, read, 0, 16 * n);
    device.queue.submit([enc.finish()]);
    await read.mapAsync(GPUMapMode.READ);
    const t = new BigUint64Array(read.getMappedRange());
    const ms = Array.from({ length: n }, (_, i) => Number(t[2 * i + 1] - t[2 * i]) / 1e6);
    read.unmap();
    [qs, resolve, read].forEach((x) => x.destroy());
    return ms;
  }

  destroy(): void {
    this.buffers.forEach((b, slot) => {
      if (!this.borrowed.has(slot)) b.destroy();
    });
    for (const t of this.textures) t.texture.destroy();
  }
}
