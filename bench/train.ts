/**
 * One fine-tuning step of the main job's model (models/tiny-vqa.dehvf's TinyVQA: DEHVF over
 * a frozen ViT and LLaMA, B 32, T 48; forward, masked cross-entropy, backward, clipping,
 * AdamW) as our compiled plan against the same step written in TensorFlow.js
 * (bench/tiny-vqa-tfjs.ts) on its WebGPU backend (same Dawn device) and its WASM backend.
 * All start from the same weights and see the same batch; the losses of the first steps
 * are checked equal, then each contender's steps are timed in interleaved rounds (every
 * step uploads the batch and reads the loss back): median ms/step and the ratios.
 *
 *   npm run bench -- train [--rounds 5] [--quick]
 */
import { elaborate } from "../compiler/elaborate.ts";
import { type Tensor, tensor } from "../compiler/tensor.ts";
import { buildTrainGraph } from "../compiler/train-graph.ts";
import { loadProgram } from "../grammar/modules.ts";
import { acquireGpu } from "../runtime/device.ts";
import { initAllParams } from "../runtime/interp-backend.ts";
import { Trainer } from "../runtime/trainer.ts";
import { table } from "./measure.ts";
import { contender, type Contender, loadAverage, loadPeers, peersLine, race, randomMatrix, registerTfjsGradients } from "./peers.ts";
import { type StepBatch, TfTinyVqaStep } from "./tiny-vqa-tfjs.ts";

const DIMS = { B: 32, T: 48 };
const IMAGE = 56;
const VOCAB = 128;
/** prompt positions (the router's mean reads them); the loss reads the rest, as in an answer */
const PROMPT = 36;
const LR = 1e-3;
/** steps whose losses must agree: the first is the same weights, the later ones the same updates */
const CHECKED_STEPS = 3;
/** losses agree when |Δ| is at most this (fp32, the same math in other orders) */
const TOLERANCE = 1e-4;

/** A deterministic batch shaped like the main job's (images in [0, 1), a prompt then an answer). */
function benchBatch(): StepBatch {
  const { B, T } = DIMS;
  const ints = (seed: number) => Int32Array.from(randomMatrix(B * T, seed), (u) => Math.min(VOCAB - 1, Math.floor(((u + 1) / 2) * VOCAB)));
  const promptMask = Float32Array.from({ length: B * T }, (_, i) => (i % T < PROMPT ? 1 : 0));
  return {
    B,
    T,
    imageSize: IMAGE,
    image: Float32Array.from(randomMatrix(B * IMAGE * IMAGE, 3), (u) => (u + 1) / 2),
    tokens: ints(5),
    promptMask,
    targets: ints(7),
    lossMask: promptMask.map((x) => 1 - x),
  };
}

const asInputs = (b: StepBatch): Map<string, Tensor> =>
  new Map([
    ["image", tensor([b.B, 1, b.imageSize, b.imageSize], Array.from(b.image))],
    ["tokens", tensor([b.B, b.T], Array.from(b.tokens))],
    ["prompt_mask", tensor([b.B, b.T], Array.from(b.promptMask))],
    ["targets", tensor([b.B, b.T], Array.from(b.targets))],
    ["loss_mask", tensor([b.B, b.T], Array.from(b.lossMask))],
  ]);

export async function main(argv: readonly string[]): Promise<void> {
  const quick = argv.includes("--quick");
  const ri = argv.indexOf("--rounds");
  const rounds = ri >= 0 ? Number(argv[ri + 1]) : quick ? 3 : 5;
  const gpu = await acquireGpu();
  console.log(`# one TinyVQA (DEHVF) fine-tuning step: forward, loss, backward, clip, AdamW; B ${DIMS.B}, T ${DIMS.T}, fp32`);
  console.log(`# device: ${gpu.info.description}; node ${process.version}; load average ${loadAverage()}`);
  const peers = await loadPeers(gpu);
  console.log(peersLine(peers));
  const { tf } = peers;
  registerTfjsGradients();

  const model = elaborate(loadProgram("models/tiny-vqa.dehvf"), "TinyVQA", { training: true });
  const graph = buildTrainGraph(model);
  const params = initAllParams(model, 0);
  const batch = benchBatch();
  const inputs = asInputs(batch);

  const t0 = performance.now();
  const ours = await Trainer.forGraph(gpu, graph, DIMS, params);
  console.log(`# ours: ${ours.plan.kernels.length} kernels per step, created in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const steps = new Map<string, number>();
  const next = (name: string) => {
    const s = (steps.get(name) ?? 0) + 1;
    steps.set(name, s);
    return s;
  };
  const oursStep = async () => (await ours.step(inputs, next("ours"), LR)).loss;
  const backends = (["webgpu", "wasm"] as const).filter((b) => (b === "webgpu" ? peers.webgpu : peers.wasm));
  const tfSteps = new Map<string, { step: () => Promise<number>; dispose(): void }>();
  for (const backend of backends) {
    await tf.setBackend(backend);
    const peer = new TfTinyVqaStep(tf, params, graph.trained, graph.opt);
    const name = `tfjs-${backend}`;
    tfSteps.set(name, {
      async step() {
        await tf.setBackend(backend);
        return peer.step(batch, next(name), LR);
      },
      dispose: () => peer.dispose(),
    });
  }

  // the same losses step by step: the same forward, and the same gradients and updates
  const losses = new Map<string, number[]>([["ours", []], ...[...tfSteps.keys()].map((k) => [k, []] as [string, number[]])]);
  for (let s = 0; s < CHECKED_STEPS; s++) {
    losses.get("ours")!.push(await oursStep());
    for (const [name, p] of tfSteps) losses.get(name)!.push(await p.step());
  }
  const ref = losses.get("ours")!;
  let agree = true;
  for (const [name, ls] of losses) {
    const worst = Math.max(...ls.map((x, i) => Math.abs(x - ref[i])));
    if (!(worst <= TOLERANCE)) agree = false;
    console.log(
      `# losses of steps 1-${CHECKED_STEPS}, ${name}: ${ls.map((x) => x.toFixed(6)).join(", ")}${name === "ours" ? "" : ` (max |Δ| vs ours ${worst.toExponential(1)})`}`,
    );
  }
  if (!agree) throw new Error(`the peers' losses differ from ours by more than ${TOLERANCE}: the step is not the same computation`);

  const cs: Contender[] = [
    contender("ours", async (reps) => {
      for (let r = 0; r < reps; r++) await oursStep();
    }),
    ...[...tfSteps].map(([name, p]) =>
      contender(name, async (reps) => {
        for (let r = 0; r < reps; r++) await p.step();
      }),
    ),
  ];
  const times = await race(cs, { batchSeconds: quick ? 1 : 3, batches: rounds, warmup: 1 });
  const o = times.get("ours")!.s;
  const rows: (string | number)[][] = [["contender", "ms/step", "ours ×"]];
  for (const c of cs) {
    const s = times.get(c.name)!.s;
    rows.push([c.name, (s * 1000).toFixed(1), c.name === "ours" ? "1" : `${(s / o).toFixed(2)}×`]);
  }
  console.log(`# median of ${rounds} interleaved rounds (each ≥ ${quick ? 1 : 3} s of steps); "ours ×": how many times faster ours is`);
  console.log(table(rows));
  console.log(`# load average after: ${loadAverage()}`);
  for (const p of tfSteps.values()) p.dispose();
  ours.destroy();
  gpu.destroy();
}
