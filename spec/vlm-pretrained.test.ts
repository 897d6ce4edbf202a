/**
 * Real images and users' datasets on the way to a pretrained model: image files of any
 * format and size preprocessed as the model declares (CLIP/SigLIP-style, grey unchanged),
 * ScienceQA and COCO-Karpathy directories, the prompt format of a train section, the
 * errors bad files give, and, end to end, a DEHVF model whose frozen LLM is the imported
 * stories260K checkpoint trained with `dehvf train` and answering through `dehvf generate`.
 */
import assert from "node:assert/strict";
import { spawnSync } from "node:child_process";
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { after, before, describe, test, type TestContext } from "node:test";
import sharp from "sharp";
import { elaborate } from "../compiler/elaborate.ts";
import { buildDefaultData } from "../data/build.ts";
import { DataError } from "../data/data-error.ts";
import { decodeImageInto } from "../data/images.ts";
import { loadDataset } from "../data/loader.ts";
import { decodeGreyPng } from "../data/png-grey.ts";
import { defaultForm, formKey, type ImageForm, imageForm, PIXEL_MEAN, PIXEL_STD, readPreprocessorConfig } from "../data/preprocess.ts";
import { promptFormat } from "../data/prompts.ts";
import type { Problem } from "../data/scienceqa.ts";
import { DehvfError, UserError } from "../grammar/diagnostics.ts";
import { loadProgram } from "../grammar/modules.ts";
import { openSafetensors } from "../io/safetensors.ts";
import { Dataset } from "../train/data.ts";
import { identityChanges, stageIdentity } from "../train/identity.ts";
import { trainStages } from "../train/stages.ts";
import { groundedExamples } from "../data/examples.ts";
import { useGpu } from "./gpu-check.ts";
import { STORIES260K } from "./shared-fixtures.ts";

const STORIES = STORIES260K;
const CLIP_MEAN = [0.4815, 0.4578, 0.4082];
const CLIP_STD = [0.2686, 0.2613, 0.2758];

let work = "";
let data = "";
let files = 0;
const gpu = useGpu();

before(async () => {
  work = mkdtempSync(join(tmpdir(), "dehvf-vlm-"));
  data = join(work, "data");
  await buildDefaultData(data, { train: 200, val: 50, test: 50 });
});
after(() => rmSync(work, { recursive: true, force: true }));

/** Writes a .dehvf file (the std library imported) and elaborates its model `name`. */
function modelFile(body: string, dir = work): string {
  const file = join(dir, `m${files++}.dehvf`);
  writeFileSync(file, `import "std/vit.dehvf"\nimport "std/llama.dehvf"\nimport "std/fusion.dehvf"\n${body}`);
  return file;
}
const model = (body: string, name: string, dir?: string) => elaborate(loadProgram(modelFile(body, dir)), name);

/** A model that only takes an image [B, C, H, W] (and returns it). */
const imageModel = (c: number, h: number, w: number, decl = "") =>
  model(`model Img {\n  ${decl}\n  forward(image: [B, ${c}, ${h}, ${w}]) -> [B, ${c}, ${h}, ${w}] = image\n}\n`, "Img");

async function decode(path: string, form: ImageForm): Promise<Float32Array> {
  const out = new Float32Array(form.shape[0] * form.shape[1] * form.shape[2]);
  await decodeImageInto(path, form, out, 0);
  return out;
}

async function writeImage(
  name: string,
  pixels: number[],
  width: number,
  height: number,
  channels: 1 | 3,
  format: "png" | "jpeg" | "webp" = "png",
): Promise<string> {
  const file = join(work, name);
  const img = sharp(Uint8Array.from(pixels), { raw: { width, height, channels } });
  await (format === "png" ? img.png() : format === "jpeg" ? img.jpeg({ quality: 100, chromaSubsampling: "4:4:4" }) : img.webp({ lossless: true })).toFile(file);
  return file;
}

const near = (got: ArrayLike<number>, want: readonly number[], tol: number, what: string) => {
  assert.equal(got.length, want.length, what);
  for (let i = 0; i < want.length; i++) assert.ok(Math.abs(got[i] - want[i]) <= tol, `${what}[${i}]: ${got[i]} vs ${want[i]}`);
};

describe("images as the model declares them", () => {
  test("RGB: shortest side to H, the centre H×W, (v / 255 − mean) / std per channel, channels first: by hand for a 4×2 PNG", async () => {
    // 4 wide, 2 high: the short side is already 2, so the crop keeps columns 1 and 2
    const px = [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160, 170, 180, 190, 200, 210, 220, 230, 240];
    const file = await writeImage("4x2.png", px, 4, 2, 3);
    const m = imageModel(3, 2, 2, `preprocess(mean: [${CLIP_MEAN}], std: [${CLIP_STD}])`);
    const form = imageForm(m)!;
    assert.deepEqual(form.shape, [3, 2, 2]);
    assert.equal(form.preprocess.resize, "crop");
    assert.equal(form.preprocess.interpolation, "bicubic");
    const at = (x: number, y: number, c: number) => px[(y * 4 + x) * 3 + c];
    const want: number[] = [];
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < 2; y++) for (let x = 0; x < 2; x++) want.push(Math.fround((at(x + 1, y, c) / 255 - CLIP_MEAN[c]) / CLIP_STD[c]));
    // R plane: 40, 70, 160, 190 ...
    assert.deepEqual([want[0], want[1]], [Math.fround((40 / 255 - 0.4815) / 0.2686), Math.fround((70 / 255 - 0.4815) / 0.2686)]);
    assert.deepEqual([...(await decode(file, form))], want);
  });

  test("any size and format (PNG, JPEG, WebP) is resized; `fill` squashes, grey files fill all channels, colour files become grey for a grey model", async () => {
    const solid = (w: number, h: number, rgb: number[]) => Array.from({ length: w * h }, () => rgb).flat();
    const rgb = [200, 100, 50];
    const fill = imageForm(imageModel(3, 4, 4, `preprocess(mean: 0.5, std: 0.25, resize: "fill", interpolation: "bilinear")`))!;
    assert.deepEqual(fill.preprocess.mean, [0.5, 0.5, 0.5], "one value stands for every channel");
    const want = [0, 1, 2].flatMap((c) => new Array(16).fill((rgb[c] / 255 - 0.5) / 0.25));
    for (const format of ["png", "jpeg", "webp"] as const) {
      const file = await writeImage(`solid.${format}`, solid(7, 3, rgb), 7, 3, 3, format);
      near(await decode(file, fill), want, format === "jpeg" ? 3 / 255 / 0.25 : 1e-6, format);
      near(
        await decode(file, imageForm(imageModel(3, 4, 4))!),
        [0, 1, 2].flatMap((c) => new Array(16).fill((rgb[c] / 255 - PIXEL_MEAN) / PIXEL_STD)),
        format === "jpeg" ? 3 / 255 / PIXEL_STD : 1e-5,
        `${format}, crop`,
      );
    }
    const grey = await writeImage("grey.png", new Array(30).fill(128), 6, 5, 1);
    near(await decode(grey, fill), new Array(48).fill((128 / 255 - 0.5) / 0.25), 1e-6, "grey file, RGB model");
    const neutral = await writeImage("neutral.png", solid(5, 5, [90, 90, 90]), 5, 5, 3);
    near(
      await decode(neutral, defaultForm([1, 3, 3])),
      new Array(9).fill((90 / 255 - PIXEL_MEAN) / PIXEL_STD),
      1.01 / 255 / PIXEL_STD,
      "colour file, grey model",
    );
  });

  test("the grey path is unchanged: a Fashion composite gives today's tensor bit for bit, and the tiny models keep the default form", async () => {
    const file = join(data, "images", "5", "image.png");
    const grey = decodeGreyPng(readFileSync(file))!;
    const want = Array.from(grey.pixels, (v) => Math.fround((v / 255 - 0.286) / 0.353));
    const tiny = elaborate(loadProgram("models/tiny-vqa.dehvf"), "TinyVQA");
    const form = imageForm(tiny)!;
    assert.equal(formKey(form), formKey(defaultForm()));
    assert.deepEqual([PIXEL_MEAN, PIXEL_STD], [0.286, 0.353]);
    assert.deepEqual([...(await decode(file, form))], want);
    // and through the loader, as training reads it
    const ds = await loadDataset(data, { splits: ["train"] });
    const pid = ds.pidSplits.train.indexOf("5");
    assert.deepEqual([...ds.splits.train!.vqa[pid].image], want);
    // a grey image of another size is resized, not refused
    const big = await writeImage(
      "big-grey.png",
      Array.from({ length: 112 * 90 }, (_, i) => i % 251),
      112,
      90,
      1,
    );
    assert.equal((await decode(big, form)).length, 56 * 56);
  });

  test("preprocessor_config.json beside a model's checkpoint weights sets what the model file leaves out", async () => {
    const dir = join(work, "ckpt");
    mkdirSync(dir);
    copyFileSync(join(STORIES, "stories260K.bin"), join(dir, "stories260K.bin"));
    writeFileSync(
      join(dir, "preprocessor_config.json"),
      JSON.stringify({
        do_normalize: true,
        image_mean: [0.5, 0.5, 0.5],
        image_std: [0.5, 0.5, 0.5],
        resample: 2,
        rescale_factor: 1 / 255,
        size: { height: 8, width: 8 },
      }),
    );
    const body = (decl: string) => `model M {
  ${decl}
  vision   = ViT(image: 8, patch: 4, d: 16, layers: 1, heads: 2, mlp: 32, channels: 3)
  language = Llama(vocab: 512, d: 64, layers: 5, heads: 8, ffn: 172, kv_heads: 4, eps: 1e-5, tie_embeddings: true) frozen from "stories260K.bin" as llama2c
  forward(image: [B, 3, 8, 8], tokens: [B, T] int) -> [B, T, 512] {
    vision(image)
    return language(tokens)
  }
}
`;
    const fromConfig = imageForm(model(body(""), "M", dir))!.preprocess;
    assert.deepEqual([fromConfig.mean, fromConfig.std, fromConfig.resize, fromConfig.interpolation], [[0.5, 0.5, 0.5], [0.5, 0.5, 0.5], "fill", "bilinear"]);
    assert.match(fromConfig.from, /preprocessor_config\.json/);
    const both = imageForm(model(body(`preprocess(std: [${CLIP_STD}])`), "M", dir))!.preprocess;
    assert.deepEqual([both.mean, both.std, both.resize], [[0.5, 0.5, 0.5], CLIP_STD, "fill"], "the model file's arguments win, one by one");
    // CLIP's own file: shortest edge, bicubic
    const clip = join(work, "clip-preprocessor.json");
    writeFileSync(
      clip,
      JSON.stringify({ crop_size: 224, do_center_crop: true, image_mean: CLIP_MEAN, image_std: CLIP_STD, resample: 3, size: { shortest_edge: 224 } }),
    );
    assert.deepEqual(readPreprocessorConfig(clip), { mean: CLIP_MEAN, std: CLIP_STD, interpolation: "bicubic", resize: "crop" });
    writeFileSync(clip, "{ not json");
    assert.throws(
      () => readPreprocessorConfig(clip),
      (e: unknown) => e instanceof DataError && e.message.includes(clip),
    );
  });

  test("a bad `preprocess` is a located error", () => {
    const refused = (f: () => unknown, re: RegExp) =>
      assert.throws(f, (e: unknown) => e instanceof DehvfError && re.test(e.render()) && e.diagnostics[0].span !== undefined);
    refused(() => imageModel(3, 2, 2, "preprocess(mean: [0.1, 0.2], std: 0.5)"), /`mean` has 2 values; the `image` input has 3 channels/);
    refused(() => imageModel(3, 2, 2, "preprocess(mean: 0.1, std: 0)"), /`std` must be greater than 0/);
    refused(() => imageModel(3, 2, 2, 'preprocess(resize: "squash")'), /`resize` must be one of "crop", "fill"/);
    refused(() => imageModel(3, 2, 2, "preprocess(means: 0.5)"), /unknown `preprocess` argument `means`[\s\S]*did you mean `mean`/);
    refused(
      () => model("model T {\n  preprocess(mean: 0.5)\n  forward(tokens: [B, T] int) -> [B, T] int = tokens\n}\n", "T"),
      /declares `preprocess` but takes no `image` input/,
    );
    refused(
      () =>
        model(
          "block X() {\n  preprocess(mean: 0.5)\n  forward(x: [B]) -> [B] = x\n}\nmodel T {\n  forward(image: [B, 1, 2, 2]) -> [B, 1, 2, 2] = image\n}\n",
          "T",
        ),
      /`preprocess` belongs in a `model`/,
    );
  });
});

describe("users' datasets", () => {
  const problem = (question: string, image: string | null, split: string, answer = 0): Problem =>
    ({
      question,
      choices: ["red", "blue", "green"],
      answer,
      hint: "",
      image,
      task: "closed choice",
      subject: "s",
      topic: "t",
      category: "colour",
      skill: "k",
      grade: "grade2",
      lecture: "",
      solution: "",
      split,
    }) as Problem;
  const vlm = (tokenizer = true) =>
    model(
      `model V {
  ${tokenizer ? `tokenizer ${JSON.stringify(join(STORIES, "tok512.bin"))}` : ""}
  vision   = ViT(image: 8, patch: 4, d: 16, layers: 1, heads: 2, mlp: 32, channels: 3)
  language = Llama(vocab: 512, d: 16, layers: 1, heads: 2, ffn: 32)
  forward(image: [B, 3, 8, 8], tokens: [B, T] int) -> [B, T, 512] {
    vision(image)
    return language(tokens)
  }
}
`,
      "V",
    );

  async function scienceqa(name: string, nested: boolean): Promise<string> {
    const dir = join(work, name);
    const problems = {
      p1: problem("What colour is it?", "image.png", "train", 1),
      p2: problem("Which is a colour?", null, "train"),
      p3: problem("What colour?", "image.png", "val"),
      p4: problem("And this?", "image.jpg", "test", 2),
      p5: problem("Text only?", null, "test"),
    };
    mkdirSync(dir);
    writeFileSync(join(dir, "problems.json"), JSON.stringify(problems));
    writeFileSync(join(dir, "pid_splits.json"), JSON.stringify({ train: ["p1", "p2"], val: ["p3"], test: ["p4", "p5"], minival: ["p3"] }));
    for (const [pid, split, file] of [
      ["p1", "train", "image.png"],
      ["p3", "val", "image.png"],
      ["p4", "test", "image.jpg"],
    ]) {
      const at = nested ? join(dir, "images", split, pid) : join(dir, "images", pid);
      mkdirSync(at, { recursive: true });
      await sharp({ create: { width: 20, height: 12, channels: 3, background: { r: 30 * Number(pid[1]), g: 10, b: 200 } } })
        .toFormat(file.endsWith(".png") ? "png" : "jpeg")
        .toFile(join(at, file));
    }
    return dir;
  }

  for (const nested of [true, false])
    test(`a ScienceQA directory (${nested ? "images/<split>/<pid>/" : "flat images/<pid>/"}): text-only problems skipped and counted, images in the model's form, the model's tokenizer`, async () => {
      const dir = await scienceqa(nested ? "sqa-nested" : "sqa-flat", nested);
      const said: string[] = [];
      const ds = await Dataset.open(dir, (l) => said.push(l));
      assert.match(said.join("\n"), /1 \/ 1 \/ 1 problems with an image \(2 text-only skipped\)/);
      const { data: d, tokens } = await ds.forStage(vlm(), { name: "ft", task: "vqa" });
      assert.deepEqual([d.splits.train!.vqa.length, d.splits.train!.skippedNoImage, d.splits.test!.skippedNoImage], [1, 1, 1]);
      assert.deepEqual(d.splits.train!.imageShape, [3, 8, 8]);
      assert.equal(d.splits.val!.vqa[0].image.length, 3 * 8 * 8);
      const red = (30 * 3) / 255;
      assert.ok(Math.abs(d.splits.val!.vqa[0].image[0] - (red - PIXEL_MEAN) / PIXEL_STD) < 1e-5, "p3's own file, channel R");
      assert.equal(d.tokenizer!.source, join(STORIES, "tok512.bin"));
      assert.match(tokens!.shown, /tok512\.bin/);
      const [ex] = groundedExamples(d.tokenizer!, d.splits.train!, d.format);
      assert.equal(d.tokenizer!.decode(ex.answer).trim(), "The answer is B.");
      // no tokenizer anywhere: the stage that reads text is refused, saying what to do
      await assert.rejects(
        ds.forStage(vlm(false), { name: "ft", task: "vqa" }),
        (e: unknown) => e instanceof UserError && /names no tokenizer .*declare `tokenizer "PATH"`/.test(e.message),
      );
    });

  test("a COCO-Karpathy caption file with its images elsewhere (--coco-root); restval is training data", async () => {
    const dir = join(work, "coco");
    const root = join(work, "coco-images");
    mkdirSync(dir);
    mkdirSync(join(root, "val2014"), { recursive: true });
    const img = (id: number, split: string) => ({
      filepath: "val2014",
      filename: `COCO_val2014_${id}.jpg`,
      imgid: id,
      cocoid: id,
      split,
      sentences: [{ raw: `A photo number ${id}.`, tokens: [], imgid: id, sentid: id }],
    });
    writeFileSync(
      join(dir, "dataset_coco.json"),
      JSON.stringify({ dataset: "coco", images: [img(1, "train"), img(2, "restval"), img(3, "val"), img(4, "test")] }),
    );
    for (const id of [1, 2, 3, 4])
      await sharp({ create: { width: 16, height: 10, channels: 3, background: "#808080" } })
        .jpeg()
        .toFile(join(root, "val2014", `COCO_val2014_${id}.jpg`));
    const ds = await Dataset.open(dir, () => {}, undefined, { cocoRoot: root });
    const { data: d } = await ds.forStage(vlm(), { name: "ft", task: "vqa" });
    assert.deepEqual([d.splits.train!.captions.length, d.splits.val!.captions.length, d.splits.train!.vqa.length], [2, 1, 0]);
    assert.deepEqual(d.splits.train!.captions[1].captions, ["A photo number 2."]);
    // without the root, the images are looked for beside the JSON: the missing file is named
    const bare = await Dataset.open(dir, () => {});
    await assert.rejects(
      bare.forStage(vlm(), { name: "ft", task: "vqa" }),
      (e: unknown) => e instanceof DataError && e.message.includes(join(dir, "val2014", "COCO_val2014_1.jpg")),
    );
  });

  test("bad images and directories are DataErrors (exit 1) naming the file", async () => {
    const dir = await scienceqa("sqa-bad", false);
    const form = imageForm(vlm())!;
    writeFileSync(join(dir, "images", "p1", "image.png"), "this is not an image");
    await assert.rejects(
      decode(join(dir, "images", "p1", "image.png"), form),
      (e: unknown) => e instanceof DataError && /cannot decode image .*p1\/image\.png/.test(e.message),
    );
    rmSync(join(dir, "images", "p3"), { recursive: true });
    await assert.rejects(
      decode(join(dir, "images", "p3", "image.png"), form),
      (e: unknown) => e instanceof DataError && /cannot read image .*p3\/image\.png/.test(e.message),
    );
    writeFileSync(join(dir, "problems.json"), JSON.stringify({ p1: { ...problem("?", "image.png", "train"), answer: 7 } }));
    writeFileSync(join(dir, "pid_splits.json"), JSON.stringify({ train: ["p1"], val: [], test: [] }));
    await assert.rejects(
      loadDataset(dir, { splits: ["train"] }),
      (e: unknown) => e instanceof DataError && /problem p1: `answer` 7 is not the index of one of its 3 choices/.test(e.message),
    );
    await assert.rejects(
      Dataset.open(join(work, "no-such-dir"), () => {}),
      (e: unknown) => e instanceof UserError && /no such directory/.test(e.message),
    );
    const empty = join(work, "empty");
    mkdirSync(empty);
    await assert.rejects(
      Dataset.open(empty, () => {}),
      (e: unknown) => e instanceof UserError && /holds no dataset/.test(e.message),
    );

    // through the CLI: exit 1, the file named, before any device work
    const file = modelFile(`model V {
  tokenizer ${JSON.stringify(join(STORIES, "tok512.bin"))}
  vision   = ViT(image: 8, patch: 4, d: 16, layers: 1, heads: 2, mlp: 32, channels: 3)
  language = Llama(vocab: 512, d: 16, layers: 1, heads: 2, ffn: 32)
  forward(image: [B, 3, 8, 8], tokens: [B, T] int) -> [B, T, 512] {
    vision(image)
    return language(tokens)
  }
}
train ft {
  task = "vqa"
  steps = 1
  batch = 1
}
`);
    const missing = await scienceqa("sqa-missing", true);
    rmSync(join(missing, "images", "val", "p3", "image.png"));
    const r = dehvf(["train", file, "--data", missing, "--out", join(work, "runs-missing")]);
    assert.equal(r.code, 1, r.err + r.out);
    assert.match(r.err, /cannot read image .*images\/val\/p3\/image\.png/);
  });
});

describe("the prompt format of a train section", () => {
  const p = { question: "What is it?", choices: ["a bag", "a shoe"], answer: 1, hint: "a hint" } as Problem;

  test("named ScienceQA formats and templates; answers read back by the same format", () => {
    assert.deepEqual(promptFormat().parts(p), {
      prompt: "Question: What is it? Context: a hint Options: (A) a bag (B) a shoe Answer:",
      answer: "The answer is B.",
    });
    assert.equal(promptFormat("CQM-A").parts(p).prompt, "Context: a hint Question: What is it? Options: (A) a bag (B) a shoe Answer:");
    assert.equal(promptFormat("QM-A").parts(p).prompt, "Question: What is it? Options: (A) a bag (B) a shoe Answer:");
    assert.equal(promptFormat("QCM-A").choiceOf(p, " The answer is B"), 1);
    assert.equal(promptFormat("QCM-A").choiceOf(p, "the answer is (a)."), 0);
    assert.equal(promptFormat("QCM-A").choiceOf(p, "The answer is C."), undefined, "no third choice");
    // "-C": the same inputs, answered with the option itself
    assert.deepEqual(promptFormat("QCM-C").parts(p), { prompt: promptFormat().parts(p).prompt, answer: "The answer is a shoe." });
    assert.equal(promptFormat("QM-C").choiceOf(p, "The answer is a shoe."), 1);
    assert.equal(promptFormat("QM-C").choiceOf(p, "The answer is B."), undefined);
    const t = promptFormat("USER: {context} {question} {options} ASSISTANT:", "{choice}");
    assert.deepEqual(t.parts({ ...p, hint: "" }), { prompt: "USER: What is it? (A) a bag (B) a shoe ASSISTANT:", answer: "a shoe" });
    assert.equal(t.choiceOf(p, " a shoe, I think"), 1);
    assert.equal(t.answerUpToChoice(p, 0), undefined);
    assert.equal(promptFormat("Q: {question} A:", "It is ({letter}).").choiceOf(p, "It is (A)."), 0);
    // "-EA", "-EC": the solution first; the choice is read after it, wherever the lead appears
    const s = { ...p, solution: "It has laces." };
    assert.equal(promptFormat("QCM-EC").parts(s).answer, "It has laces. The answer is a shoe.");
    assert.equal(promptFormat("QCM-EA").parts(s).answer, "It has laces. The answer is B.");
    assert.equal(promptFormat("QCM-EA").answerUpToChoice(s, 0), "It has laces. The answer is A");
    assert.equal(promptFormat("QCM-EC").parts({ ...s, solution: "" }).answer, "The answer is a shoe.", "no solution: the plain answer");
    assert.equal(promptFormat("QCM-EC").choiceOf(s, "It is a bag. The answer is a shoe."), 1, "the choice after the lead, not a choice named in the solution");
    assert.equal(promptFormat("QCM-EC").choiceOf(s, "It is a bag."), undefined);
    assert.equal(promptFormat("{question}", "Because {solution}, {choice}").parts(s).answer, "Because It has laces., a shoe");
    assert.throws(() => promptFormat("{question}", "{choice} since {solution}"), /before the \{letter\} or \{choice\}/);
    assert.throws(() => promptFormat("{question}", "{solution}"), /exactly one \{letter\} or \{choice\}/);
  });

  test("`prompt` and `answer` keys: checked at the key, recorded in the stage identity", () => {
    const section = (keys: string) =>
      trainStages(
        loadProgram(modelFile(`model M {\n  forward(image: [B, 1, 2, 2]) -> [B, 1, 2, 2] = image\n}\ntrain s {\n  model = M\n  task = "vqa"\n${keys}\n}\n`)),
      )[0];
    assert.equal(section("").prompt, undefined, "the default leaves the identity of existing runs as it was");
    assert.equal(section('prompt = "QM-A"').prompt, "QM-A");
    const refused = (keys: string, re: RegExp) =>
      assert.throws(
        () => section(keys),
        (e: unknown) => e instanceof DehvfError && re.test(e.message) && e.diagnostics[0].span !== undefined,
      );
    refused(
      'prompt = "QCMA"',
      /unknown prompt format "QCMA": use one of "QCM-A", "QCM-C", "QCM-EA", "QCM-EC", "CQM-A", "CQM-C", "CQM-EA", "CQM-EC", "QM-A", "QM-C", "QM-EA", "QM-EC"/,
    );
    refused('prompt = "{question} {answer}"', /unknown placeholder \{answer\} in `prompt`/);
    refused('prompt = "QM-A"\n  answer = "{letter}"', /`answer` goes with a template `prompt`/);
    refused('prompt = "{question}"\n  answer = "no choice"', /needs exactly one \{letter\} or \{choice\}/);
    refused("prompt = 3", /`prompt` must be a string/);
    refused('loss = "answer"', /`loss` applies to the "text" task/);
    const m = imageModel(1, 2, 2);
    const [a, b] = [section(""), section('prompt = "QM-A"')];
    assert.deepEqual(identityChanges(stageIdentity(a, m, "d", {}), stageIdentity(b, m, "d", {})), ['`prompt` unset → "QM-A"']);
  });
});

function dehvf(args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ["bin/dehvf.js", ...args], { encoding: "utf8", timeout: 300_000 });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

describe("a DEHVF model on the imported stories260K LLM, end to end", () => {
  test("`dehvf train` fine-tunes the fusion over the frozen checkpoint (text by tok512), `dehvf generate` answers from the result", async (t: TestContext) => {
    if (!gpu.device(t)) return;
    const file = modelFile(`import ${JSON.stringify(resolve("spec/fixtures/train/micro.dehvf"))}

model StoriesVQA {
  tokenizer ${JSON.stringify(join(STORIES, "tok512.bin"))}
  vision   = ViT(image: 56, patch: 14, d: 16, layers: 2, heads: 2, mlp: 32, channels: 1) frozen
  language = Llama(vocab: 512, d: 64, layers: 5, heads: 8, ffn: 172, kv_heads: 4, eps: 1e-5, rope_base: 10000.0, tie_embeddings: true) frozen from ${JSON.stringify(join(STORIES, "stories260K.bin"))} as llama2c

  fusion dehvf = DEHVF(vision_layers: vision.layers, d_vision: vision.d, d: language.d, targets: language.layers,
                       t: 32, router_hidden: 16, proj_hidden: 16, slots: 16) {
    target   language.layer[*].memory
    features vision.layer[*].out
    hidden   language.layer[l].ffn_in
    mask     prompt_mask
  }

  forward(image: [B, 1, 56, 56], tokens: [B, T] int, prompt_mask: [B, T]) -> [B, T, 512] {
    vision(image)
    return language(tokens)
  }
}

# the ViT pre-trains as the training tests' TinyViTClassifier (its file's models come with the import)
train pretrain_vision {
  model = TinyViTClassifier
  task  = "classify"
  steps = 4
  batch = 8
}

train finetune {
  backbones = [pretrain_vision]
  task   = "vqa"
  steps  = 4
  batch  = 8
  lr     = 0.003
  prompt = "QM-A"
}
`);
    const runs = join(work, "runs");
    const t0 = performance.now();
    const r = dehvf(["train", file, "--data", data, "--out", runs, "--eval-problems", "8", "--eval-captions", "0"]);
    const trainSeconds = (performance.now() - t0) / 1000;
    assert.equal(r.code, 0, r.err + r.out);
    assert.match(r.out, /reads text with the model's tokenizer .*tok512\.bin \(512 tokens\), prompts QM-A/);
    assert.match(r.out, /finetune \(StoriesVQA\): trainable parameters [\d,]+ of [\d,]+ \(dehvf\)/);
    assert.match(r.out, /test accuracy [\d.]+% of 8/);
    const dir = join(runs, "finetune-StoriesVQA");
    const final = await openSafetensors(join(dir, "final.safetensors"));
    const names = final.names();
    await final.close();
    assert.ok(
      names.some((n) => n.startsWith("dehvf.")) && !names.some((n) => n.startsWith("language.")),
      "the frozen checkpoint stays in its file, not in the result",
    );

    const image = join(data, "images", "7", "image.png");
    const t1 = performance.now();
    const g = dehvf([
      "generate",
      file,
      "--checkpoint",
      dir,
      "--image",
      image,
      "--prompt",
      "Question: Is there a bag in the picture? Options: (A) yes (B) no Answer:",
      "--max-tokens",
      "8",
    ]);
    const generateSeconds = (performance.now() - t1) / 1000;
    assert.equal(g.code, 0, g.err);
    assert.ok(g.out.trim().length > 0, `generated text: ${JSON.stringify(g.out)}`);
    t.diagnostic(`train ${trainSeconds.toFixed(1)} s, generate ${generateSeconds.toFixed(1)} s; generated ${JSON.stringify(g.out.trim())}`);
  });
});
