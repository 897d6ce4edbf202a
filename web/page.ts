/**
 * The tiny-vqa page (`npm run web`): runs in the browser. Opens the adapter, loads the
 * generated module's model with its weights file, and answers a question about a picture
 * (one of the held-out test images, or the person's own) with greedy generation, showing
 * the answer and DEHVF's router weights per LLM layer. `window.dehvf` exposes the same
 * calls to a test driving the page (spec/web-page.test.ts).
 */
import { hfTokenizer } from "../data/tokenizers/hf.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import type { Gpu } from "../runtime/gpu.ts";
import { browserPlatform } from "../runtime/platform.ts";

/** What the page uses of a generated module (bindings/emit-ts.ts) compiled with `--tap dehvf.alpha`. */
export interface VqaModule {
  readonly dims: { readonly T: number };
  readonly imageForm: { readonly shape: readonly number[]; readonly mean: readonly number[]; readonly std: readonly number[]; readonly rescale: number };
  readonly load: (
    device: Gpu,
    weights: string,
  ) => Promise<{
    readonly weights: "f16" | "f32";
    forward(x: {
      image: Float32Array;
      tokens: Int32Array;
      prompt_mask: Float32Array;
    }): Promise<{ out: Float32Array; taps: { "dehvf.alpha": readonly Float32Array[] } }>;
    generate(
      prompt: readonly number[],
      inputs: { image: Float32Array },
      opts: { maxTokens: number; stop?: readonly number[]; bos?: number },
    ): Promise<number[]>;
  }>;
}

/** A held-out example, as web/build.ts exports it. */
interface Example {
  readonly pid: string;
  readonly image: string;
  readonly category: string;
  readonly question: string;
  readonly prompt: string;
  readonly answer: string;
}

interface Answer {
  readonly ids: number[];
  readonly text: string;
  /** [LLM layer][ViT layer] */
  readonly router: number[][];
  readonly ms: number;
}

const $ = <T extends HTMLElement>(id: string) => document.getElementById(id) as T;

/** Grey pixels (0..255, row-major H×W) as the model's image input: (v × rescale − mean) / std. */
function imageInput(form: VqaModule["imageForm"], grey: ArrayLike<number>): Float32Array {
  return Float32Array.from(grey, (v) => (v * form.rescale - form.mean[0]) / form.std[0]);
}

/** A picture drawn into H×W and read back as grey levels (luma); an image file is scaled to fill it. */
function greyPixels(source: CanvasImageSource, size: number): Uint8ClampedArray {
  const canvas = document.createElement("canvas");
  canvas.width = canvas.height = size;
  const ctx = canvas.getContext("2d", { willReadFrequently: true })!;
  ctx.drawImage(source, 0, 0, size, size);
  const rgba = ctx.getImageData(0, 0, size, size).data;
  return Uint8ClampedArray.from({ length: size * size }, (_, i) => Math.round(0.299 * rgba[4 * i] + 0.587 * rgba[4 * i + 1] + 0.114 * rgba[4 * i + 2]));
}

function loadImage(url: string): Promise<HTMLImageElement> {
  return new Promise((resolve, reject) => {
    const img = new Image();
    img.onload = () => resolve(img);
    img.onerror = () => reject(new Error(`could not load ${url}`));
    img.src = url;
  });
}

function routerTable(router: number[][]): string {
  const cell = (w: number) => `<td style="background: rgba(37, 99, 235, ${w.toFixed(3)})">${w.toFixed(2)}</td>`;
  const head = `<tr><th>LLM layer \\ ViT layer</th>${router[0].map((_, j) => `<th>${j}</th>`).join("")}</tr>`;
  return `<table class="router">${head}${router.map((row, l) => `<tr><th>${l}</th>${row.map(cell).join("")}</tr>`).join("")}</table>`;
}

export async function start(mod: VqaModule): Promise<void> {
  const status = $("status");
  const say = (s: string) => (status.textContent = s);
  const fail = (e: unknown) => {
    say(`error: ${(e as Error).message}`);
    (window as unknown as { dehvf: unknown }).dehvf = { error: (e as Error).message };
  };
  try {
    // the features dehvf uses that the adapter offers (SwiftShader: no shader-f16, so the f32 plan runs)
    const gpu = await browserPlatform.gpu();
    const adapterText = `${gpu.info.vendor} ${gpu.info.architecture}`.trim() || "unknown adapter";
    say(`loading the model on ${adapterText}…`);
    const [model, tokJson, tokConfig, examples] = await Promise.all([
      mod.load(gpu, "gen/TinyVQA.weights.safetensors"),
      fetch("tokenizer.json").then((r) => r.json()),
      fetch("tokenizer_config.json").then((r) => r.json()),
      fetch("examples.json").then((r) => r.json() as Promise<Example[]>),
    ]);
    const tok: Tokenizer = hfTokenizer(tokJson, tokConfig, "tokenizer.json");
    const size = mod.imageForm.shape[1];
    const stop = [tok.special.eos].filter((x): x is number => x !== undefined);

    const answer = async (grey: ArrayLike<number>, prompt: string, maxTokens = mod.dims.T): Promise<Answer> => {
      const t0 = performance.now();
      const image = imageInput(mod.imageForm, grey);
      const ids = [tok.special.bos!, ...tok.encode(prompt)];
      const out = await model.generate(ids, { image }, { maxTokens, stop, bos: tok.special.bos });
      // the router weights of the prompt (they do not change while it answers)
      const tokens = Int32Array.from({ length: mod.dims.T }, (_, i) => (i < ids.length ? ids[i] : 0));
      const mask = Float32Array.from({ length: mod.dims.T }, (_, i) => (i >= 1 && i < ids.length ? 1 : 0));
      const y = await model.forward({ image, tokens, prompt_mask: mask });
      return {
        ids: out,
        text: tok.decode(out.filter((i) => !stop.includes(i))),
        router: y.taps["dehvf.alpha"].map((a) => Array.from(a)),
        ms: performance.now() - t0,
      };
    };

    // the picker: held-out examples, their questions, or a file
    let grey: ArrayLike<number> | undefined;
    const preview = $<HTMLCanvasElement>("preview");
    const show = (source: CanvasImageSource) => {
      grey = greyPixels(source, size);
      const ctx = preview.getContext("2d")!;
      ctx.imageSmoothingEnabled = false;
      ctx.drawImage(source, 0, 0, preview.width, preview.height);
    };
    const picker = $<HTMLSelectElement>("example");
    const question = $<HTMLSelectElement>("question");
    for (const [i, e] of examples.entries()) picker.add(new Option(`${e.pid}: ${e.question} (${e.category})`, String(i)));
    for (const q of [...new Set(examples.map((e) => e.prompt))]) question.add(new Option(q.replace(/^Question: /, "").replace(/ Answer:$/, ""), q));
    const pick = async () => {
      const e = examples[Number(picker.value)];
      if (!e) return;
      show(await loadImage(e.image));
      question.value = e.prompt;
      $("expected").textContent = `held-out answer: ${e.answer}`;
    };
    picker.onchange = () => void pick().catch(fail);
    $<HTMLInputElement>("file").onchange = async (ev) => {
      const f = (ev.target as HTMLInputElement).files?.[0];
      if (!f) return;
      show(await createImageBitmap(f));
      $("expected").textContent = "your picture (scaled to 56×56, grey)";
    };
    const ask = $<HTMLButtonElement>("ask");
    ask.onclick = async () => {
      if (!grey) return;
      ask.disabled = true;
      say("answering…");
      try {
        const a = await answer(grey, question.value);
        $("answer").textContent = a.text;
        $("router").innerHTML = routerTable(a.router);
        say(`answered in ${(a.ms / 1000).toFixed(1)} s on ${adapterText} (${model.weights} weights)`);
      } catch (e) {
        fail(e);
      } finally {
        ask.disabled = false;
      }
    };
    if (examples.length) await pick();
    ask.disabled = false;
    say(`ready on ${adapterText} (${model.weights} weights)`);
    (window as unknown as { dehvf: unknown }).dehvf = {
      ready: true,
      adapter: { vendor: gpu.info.vendor, architecture: gpu.info.architecture, f16: gpu.hasF16 },
      weights: model.weights,
      /** the test's entry: forward logits at the last prompt position, router weights and greedy ids */
      async run(image: number[], prompt: number[], maxTokens: number) {
        const img = Float32Array.from(image);
        const T = mod.dims.T;
        const tokens = Int32Array.from({ length: T }, (_, i) => (i < prompt.length ? prompt[i] : 0));
        const first = prompt[0] === tok.special.bos ? 1 : 0;
        const mask = Float32Array.from({ length: T }, (_, i) => (i >= first && i < prompt.length ? 1 : 0));
        const y = await model.forward({ image: img, tokens, prompt_mask: mask });
        const ids = await model.generate(prompt, { image: img }, { maxTokens, bos: tok.special.bos });
        return { logits: Array.from(y.out), router: y.taps["dehvf.alpha"].map((a) => Array.from(a)), ids };
      },
      answer: async (prompt: string) => (grey ? answer(grey, prompt) : undefined),
    };
  } catch (e) {
    fail(e);
  }
}
