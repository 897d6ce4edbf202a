/**
 * Host side of one generated matmul on its own, for the autotuner, tests and benchmarks:
 * pipelines, buffers, the operand textures of the "sg-texture" variant, batched dispatch
 * and readback. (The plan executor does this for whole plans; this is the minimal
 * standalone version.)
 */
import { DEFAULT_EPILOGUE, type MatmulKernel, type OperandTexture } from "../kernels/matmul.ts";

/** One dispatch of an operand texture's fill kernel (OperandTexture.fill) from its source buffer. */
export interface TextureFill {
  readonly pipeline: GPUComputePipeline;
  readonly group: GPUBindGroup;
  readonly workgroups: readonly [number, number, number];
}

/** An operand texture on the device (what "sg-texture" binds at 2) and the pass that fills it. */
export interface DeviceTexture {
  readonly texture: GPUTexture;
  readonly view: GPUTextureView;
  readonly fill: TextureFill;
}

export interface MatmulRun {
  readonly kernel: MatmulKernel;
  /** upload operands (A, B as flat f32 arrays in their strided layouts) */
  write(a: Float32Array, b: Float32Array): void;
  /** encode the operand→texture fills (if any, unless fill: false) and `reps` matmul dispatches into one pass */
  encode(enc: GPUCommandEncoder, reps: number, opts?: { fill?: boolean; timestamps?: GPUComputePassTimestampWrites }): void;
  /** run once (fills + matmul) and read C back */
  run(): Promise<Float32Array>;
  /** C's buffer (for reading back elsewhere) */
  readonly output: GPUBuffer;
  destroy(): void;
}

export async function checkedModule(device: GPUDevice, code: string, label: string): Promise<GPUShaderModule> {
  device.pushErrorScope("validation");
  const module = device.createShaderModule({ code, label });
  const info = await module.getCompilationInfo();
  const err = await device.popErrorScope();
  const errors = info.messages.filter((m) => m.type === "error");
  if (errors.length || err) {
    const lines = code.split("\n");
    const msg = errors
      .slice(0, 8)
      .map((m) => `${label}:${m.lineNum}:${m.linePos} ${m.message}\n  ${lines[m.lineNum - 1] ?? ""}`)
      .join("\n");
    throw new Error(`WGSL compile failed: ${msg || err?.message}`);
  }
  return module;
}

export async function createMatmulRun(
  device: GPUDevice,
  kernel: MatmulKernel,
  sizes: { aElems: number; bElems: number; cElems: number },
  epilogue = DEFAULT_EPILOGUE,
): Promise<MatmulRun> {
  const storage = GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC;
  const bytes = (n: number): number => Math.max(16, Math.ceil((n * 4) / 16) * 16);
  const A = device.createBuffer({ size: bytes(sizes.aElems), usage: storage });
  const B = device.createBuffer({ size: bytes(sizes.bElems), usage: storage });
  const C = device.createBuffer({ size: bytes(sizes.cElems), usage: storage });
  const read = device.createBuffer({ size: bytes(sizes.cElems), usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  device.pushErrorScope("validation");
  // a failure below must not leave the scope pushed: the autotuner goes on with other kernels
  const setupFailed = async (e: unknown): Promise<never> => {
    await device.popErrorScope();
    for (const b of [A, B, C, read]) b.destroy();
    throw e;
  };
  const module = await checkedModule(device, `${kernel.wgsl}\n${epilogue}\n`, kernel.variant).catch(setupFailed);
  const pipeline = await device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } }).catch(setupFailed);

  // B read through a texture (sg-texture): filled from B's buffer by its own pass
  const fills: TextureFill[] = [];
  const textures: GPUTexture[] = [];
  const texture = async (layout: OperandTexture, src: GPUBuffer): Promise<GPUTextureView> => {
    const t = createOperandTexture(device, layout, src, await fillPipeline(device, layout));
    textures.push(t.texture);
    fills.push(t.fill);
    return t.view;
  };
  const bRes = kernel.bTexture ? await texture(kernel.bTexture, B) : { buffer: B };
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: C } },
      { binding: 1, resource: { buffer: A } },
      { binding: 2, resource: bRes },
    ],
  });
  const err = await device.popErrorScope();
  if (err) throw new Error(`matmul setup (${kernel.variant}): ${err.message}`);

  const self: MatmulRun = {
    kernel,
    output: C,
    write(a, b) {
      device.queue.writeBuffer(A, 0, a);
      device.queue.writeBuffer(B, 0, b);
    },
    encode(enc, reps, opts = {}) {
      const pass = enc.beginComputePass(opts.timestamps ? { timestampWrites: opts.timestamps } : {});
      if (opts.fill ?? true) encodeFills(pass, fills);
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, group);
      for (let r = 0; r < reps; r++) pass.dispatchWorkgroups(...kernel.workgroups);
      pass.end();
    },
    async run() {
      const enc = device.createCommandEncoder();
      self.encode(enc, 1);
      enc.copyBufferToBuffer(C, 0, read, 0, read.size);
      device.queue.submit([enc.finish()]);
      await read.mapAsync(GPUMapMode.READ);
      const out = new Float32Array(sizes.cElems);
      out.set(new Float32Array(read.getMappedRange(), 0, sizes.cElems));
      read.unmap();
      return out;
    },
    destroy() {
      for (const b of [A, B, C, read]) b.destroy();
      for (const t of textures) t.destroy();
    },
  };
  return self;
}

/** The compute pipeline of an operand texture's fill kernel (one per distinct fill WGSL is enough). */
export async function fillPipeline(device: GPUDevice, layout: OperandTexture): Promise<GPUComputePipeline> {
  const module = await checkedModule(device, layout.fill.wgsl, "fill");
  return device.createComputePipelineAsync({ layout: "auto", compute: { module, entryPoint: "main" } });
}

/**
 * The texture `layout` describes, and its fill from `src` (B's strided buffer) through
 * `pipeline` (fillPipeline). It holds nothing until a fill runs: the caller encodes one
 * after every write to `src`.
 */
export function createOperandTexture(device: GPUDevice, layout: OperandTexture, src: GPUBuffer, pipeline: GPUComputePipeline, label?: string): DeviceTexture {
  const texture = device.createTexture({
    size: [layout.width, layout.height],
    format: layout.format,
    usage: GPUTextureUsage.TEXTURE_BINDING | GPUTextureUsage.STORAGE_BINDING,
    ...(label ? { label } : {}),
  });
  const group = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: texture.createView() },
      { binding: 1, resource: { buffer: src } },
    ],
  });
  return { texture, view: texture.createView(), fill: { pipeline, group, workgroups: layout.fill.workgroups } };
}

/** Encodes the fills into `pass` (a compute pass; the dispatches are independent of one another). */
export function encodeFills(pass: GPUComputePassEncoder, fills: readonly TextureFill[]): void {
  for (const f of fills) {
    pass.setPipeline(f.pipeline);
    pass.setBindGroup(0, f.group);
    pass.dispatchWorkgroups(...f.workgroups);
  }
}
