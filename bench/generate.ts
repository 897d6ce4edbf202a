/**
 * Decoding speed on a real pretrained model, llama2.c's stories260K (imported from the
 * shared fixture): tokens/s with our KV cache, the time per token at several positions
 * (constant: each step attends over the whole cache, masked), the same token recomputed
 * from the whole sequence (the forward at T = position + 1, as decoding did before the
 * cache), and TensorFlow.js-wasm running the same weights with its own KV cache, written
 * in tf ops. The first tokens of every decoder are checked equal.
 */
import { spawnSync } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { elaborate } from "../compiler/elaborate.ts";
import { generationModels } from "../compiler/generation-models.ts";
import { buildPlan, type WeightStorage } from "../lowering/plan.ts";
import { tensor } from "../compiler/tensor.ts";
import { argmax } from "../generate/sampler.ts";
import { loadProgram } from "../grammar/modules.ts";
import { DeviceDecoder } from "../runtime/decoder.ts";
import { acquireGpu } from "../runtime/device.ts";
import { createExecutor } from "../runtime/executor.ts";
import { loadAllParams } from "../runtime/interp-backend.ts";
import { planTarget } from "../runtime/webgpu-backend.ts";
import { TfLlama } from "./llama-tfjs.ts";
import { loadAverage, loadPeers } from "./peers.ts";

const FIXTURE = "../shared/fixtures/stories260K";
const CONTEXT = 512;
const STEPS = 500;
const AT = [16, 128, 256, 500];
/** tokens compared between decoders (greedy, from BOS) */
const CHECKED = 32;
/** positions recomputed from the whole sequence (each a forward plan of its own length) */
const RECOMPUTE_AT = [16, 128, 256];

const median = (xs: readonly number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
/** the median time of the steps within ±16 positions of `pos` (one step is at the mercy of the host) */
const around = (times: readonly number[], pos: number) => median(times.slice(Math.max(1, pos - 16), Math.min(times.length, pos + 17)));

export async function main(_argv: readonly string[]): Promise<void> {
  const dir = mkdtempSync(join(tmpdir(), "dehvf-bench-generate-"));
  try {
    const imported = spawnSync(
      process.execPath,
      ["bin/dehvf.js", "import", join(FIXTURE, "stories260K.bin"), "--tokenizer", join(FIXTURE, "tok512.bin"), "-o", join(dir, "s.dehvf")],
      { encoding: "utf8" },
    );
    if (imported.status !== 0) throw new Error(`import failed: ${imported.stderr}`);
    const program = loadProgram(join(dir, "s.dehvf"));
    const models = generationModels(program);
    const params = await loadAllParams(models.decode, 0);
    const gpu = await acquireGpu();
    console.log(
      `# stories260K (5 layers, d 64, 8 heads / 4 KV heads, vocab 512), greedy from BOS, context ${CONTEXT}; ${gpu.info.description}; load ${loadAverage()}`,
    );

    // ours: prefill BOS, then one decode step per token
    const decodeGreedy = async (weights: WeightStorage) => {
      const dec = await DeviceDecoder.create(gpu, models, params, { batch: 1, context: CONTEXT, weights });
      let logits = (await dec.prefill(new Map([["tokens", tensor([1, 1], Int32Array.of(1))]]), 1)).data;
      const tokens: number[] = [];
      const times: number[] = [NaN];
      for (let pos = 1; pos <= STEPS; pos++) {
        const next = argmax(logits);
        tokens.push(next);
        const t0 = performance.now();
        logits = (await dec.decode(Int32Array.of(next), Int32Array.of(pos))).data;
        times.push(performance.now() - t0);
      }
      dec.destroy();
      return { tokens, times };
    };
    const { tokens: ours, times } = await decodeGreedy("f32");
    const steady = median(times.slice(10));
    // the same with the weights stored as f16, where the adapter reads them
    const half = gpu.hasF16 ? await decodeGreedy("f16") : undefined;

    // recomputing: the token at position p from a forward over all p + 1 tokens
    const full = elaborate(program);
    const recompute: Record<number, number> = {};
    for (const p of RECOMPUTE_AT) {
      const ex = await createExecutor(gpu, buildPlan(full, { B: 1, T: p + 1 }, planTarget(gpu)), undefined);
      ex.writeParams(params);
      const feed = new Map([["tokens", tensor([1, p + 1], Int32Array.from([1, ...ours.slice(0, p)]))]]);
      await ex.run(feed);
      const ms: number[] = [];
      let out: Float64Array = new Float64Array();
      for (let r = 0; r < 5; r++) {
        const t0 = performance.now();
        out = (await ex.run(feed, { read: ["out"] }))[0].data;
        ms.push(performance.now() - t0);
      }
      if (argmax(out.subarray(p * 512, (p + 1) * 512)) !== ours[p]) throw new Error(`recomputing disagrees with the cache at position ${p}`);
      recompute[p] = median(ms);
      ex.destroy();
    }

    // the peer: TF.js-wasm with its own KV cache
    const peers = await loadPeers(gpu);
    const rows: string[][] = [];
    let peerSteady = NaN;
    if (peers.wasm) {
      await peers.tf.setBackend("wasm");
      const llama = new TfLlama(peers.tf, { layers: 5, d: 64, heads: 8, kvHeads: 4, eps: 1e-5, ropeBase: 10000 }, params);
      const peerTimes: number[] = [];
      let token = 1;
      for (let pos = 0; pos < STEPS; pos++) {
        const t0 = performance.now();
        const row = await llama.step(token, pos);
        peerTimes.push(performance.now() - t0);
        token = argmax(row);
        if (pos < CHECKED && token !== ours[pos]) throw new Error(`tfjs-wasm's token ${pos + 1} is ${token}, ours ${ours[pos]}`);
      }
      llama.dispose();
      peerSteady = median(peerTimes.slice(10));
      rows.push(["tfjs-wasm, KV cache (tf ops)", ...AT.map((p) => around(peerTimes, p).toFixed(2)), (1000 / peerSteady).toFixed(0), "1.00"]);
    }
    if (half) {
      const halfSteady = median(half.times.slice(10));
      const same = half.tokens.findIndex((t, i) => t !== ours[i]);
      rows.unshift([
        "dehvf, KV cache, f16 weights",
        ...AT.map((p) => around(half.times, p).toFixed(2)),
        (1000 / halfSteady).toFixed(0),
        Number.isFinite(peerSteady) ? (peerSteady / halfSteady).toFixed(2) : "--",
      ]);
      console.log(
        `# f16 weights: ${same < 0 ? `all ${STEPS}` : `the first ${same} of ${STEPS}`} greedy tokens as with f32; f16 / f32 time per token ${(halfSteady / steady).toFixed(2)}`,
      );
    }
    rows.unshift([
      "dehvf, KV cache",
      ...AT.map((p) => around(times, p).toFixed(2)),
      (1000 / steady).toFixed(0),
      Number.isFinite(peerSteady) ? (peerSteady / steady).toFixed(2) : "--",
    ]);
    console.log(`# first ${CHECKED} tokens equal across decoders: yes`);
    console.log(`| decoder | ms/token at ${AT.join(" / ")} | tokens/s | speed-up vs tfjs-wasm |`);
    console.log("|---|---|---|---|");
    for (const r of rows) console.log(`| ${r[0]} | ${r.slice(1, 1 + AT.length).join(" / ")} | ${r[1 + AT.length]} | ${r[2 + AT.length]}× |`);
    console.log(
      `| dehvf, recomputing the sequence | ${RECOMPUTE_AT.map((p) => recompute[p].toFixed(2)).join(" / ")} (at ${RECOMPUTE_AT.join(" / ")}) | ${(1000 / recompute[256]).toFixed(0)} at 256 | cache ${(recompute[256] / around(times, 256)).toFixed(1)}× faster at 256 |`,
    );
    const spread = AT.filter((p) => p >= 10).map((p) => around(times, p) / steady);
    console.log(
      `# per-token time from position 10 to 500 within ${((Math.max(...spread) - 1) * 100).toFixed(0)}% / ${((1 - Math.min(...spread)) * 100).toFixed(0)}% of the median; load ${loadAverage()}`,
    );
    gpu.destroy();
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
