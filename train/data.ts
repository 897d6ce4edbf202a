import { createHash } from "node:crypto";
import { existsSync, readFileSync, statSync } from "node:fs";
import { dirname, join } from "node:path";
import type { CompiledModel } from "../compiler/elaborate.ts";
import { shownPath } from "../compiler/weight-sources.ts";
import { buildDefaultData } from "../data/build.ts";
import { cocoSplit, datasetDigest, type DatasetIndex, FILES, type LoadedDataset, type LoadedSplit, loadSplit, readIndex } from "../data/loader.ts";
import { defaultForm, formKey, imageForm } from "../data/preprocess.ts";
import { promptFormat } from "../data/prompts.ts";
import { SPLITS, type SplitName } from "../data/scienceqa.ts";
import { loadTokenizer, TOKENIZER_CONFIG, TOKENIZER_JSON } from "../data/tokenizers/load.ts";
import type { Tokenizer } from "../data/tokenizers/tokenizer.ts";
import { UserError } from "../grammar/diagnostics.ts";
import type { StageConfig } from "./stages.ts";

export const DEFAULT_DATA_DIR = "out/data/fashion";

/** What a stage's data depends on besides the dataset: how its model reads images and text, and how the stage words problems. */
export type StageView = Pick<StageConfig, "name" | "task" | "prompt" | "answer">;

const sha256 = (b: string | Uint8Array) => createHash("sha256").update(b).digest("hex");

/** The files a tokenizer path stands for (tokenizer.json with its config beside it, or a tokenizer.bin), digested by content. */
function filesDigest(path: string): string {
  const json = statSync(path).isDirectory() ? join(path, TOKENIZER_JSON) : path;
  const config = join(dirname(json), TOKENIZER_CONFIG);
  const files = [json, ...(json.endsWith(".json") && existsSync(config) ? [config] : [])];
  return sha256(files.map((f) => sha256(readFileSync(f))).join("\n"));
}

/**
 * A dataset directory, opened once and viewed per stage: each stage's model decides how the
 * images are decoded (its `image` input's [C, H, W] and preprocessing) and which tokenizer
 * reads the text (its `tokenizer`, else the dataset's tokenizer.json); the stage decides
 * the prompt format. Decoded splits are shared by the stages whose models read images alike.
 */
export class Dataset {
  private readonly decoded = new Map<string, Promise<Partial<Record<SplitName, LoadedSplit>>>>();
  private readonly tokenizers = new Map<string, Promise<{ tok: Tokenizer; digest: string }>>();

  private constructor(
    readonly index: DatasetIndex,
    readonly splits: readonly SplitName[],
    private readonly say: (line: string) => void,
  ) {}

  /**
   * The dataset a run uses: the default one is built on first use from the installed
   * Fashion-MNIST (no download); a directory the user names must already hold one
   * (ScienceQA's problems.json + pid_splits.json, COCO-Karpathy's dataset_coco.json, or both).
   */
  static async open(
    dir: string | undefined,
    say: (line: string) => void,
    splits: readonly SplitName[] = SPLITS,
    opts: { cocoRoot?: string } = {},
  ): Promise<Dataset> {
    if (dir === "") throw new UserError("--data: an empty path; leave out --data to build the default dataset");
    const at = dir ?? DEFAULT_DATA_DIR;
    if (dir === undefined) {
      let last = "";
      try {
        const r = await buildDefaultData(at, {
          onProgress: (p) => {
            const line = `building the default dataset in ${at}: ${p.phase} ${p.done}/${p.total}`;
            if (p.phase !== "done" && p.done % 2000 === 0 && line !== last) say((last = line));
          },
        });
        say(r.reused ? `data: ${at} (built before)` : `data: built ${at} in ${r.manifest.buildSeconds.toFixed(1)} s`);
      } catch (e) {
        throw new UserError(`cannot build the default dataset: ${(e as Error).message}`);
      }
    } else {
      if (!existsSync(at)) throw new UserError(`--data ${at}: no such directory`);
      if (!statSync(at).isDirectory())
        throw new UserError(`--data ${at}: not a directory (a dataset is a directory holding ${FILES.problems} or ${FILES.captions})`);
      if (!existsSync(join(at, FILES.problems)) && !existsSync(join(at, FILES.captions)))
        throw new UserError(
          `${at} holds no dataset (no ${FILES.problems} for ScienceQA, no ${FILES.captions} for COCO-Karpathy captions); leave out --data to build the default one`,
        );
    }
    if (opts.cocoRoot !== undefined && !(opts.cocoRoot && existsSync(opts.cocoRoot) && statSync(opts.cocoRoot).isDirectory()))
      throw new UserError(`--coco-root ${JSON.stringify(opts.cocoRoot)}: no such directory`);
    const index = await readIndex(at, opts);
    const data = new Dataset(index, splits, say);
    say(`data: ${data.describe()}`);
    return data;
  }

  /** "200 / 50 / 50 problems with an image (12 text-only skipped), 20 / 5 / 5 caption images" */
  private describe(): string {
    const { problems, pidSplits, coco } = this.index;
    const pids = (s: SplitName) => pidSplits[s] ?? [];
    const withImage = this.splits.map((s) => pids(s).filter((p) => problems[p]?.image).length);
    const textOnly = this.splits.reduce((a, s) => a + pids(s).filter((p) => problems[p] && !problems[p].image).length, 0);
    const captions = this.splits.map((s) => (coco?.images ?? []).filter((im) => cocoSplit(im) === s).length);
    const parts = [`${withImage.join(" / ")} problems with an image${textOnly ? ` (${textOnly} text-only skipped)` : ""}`];
    if (coco) parts.push(`${captions.join(" / ")} caption images`);
    return `${parts.join(", ")} (${this.splits.join(" / ")})`;
  }

  private tokenizerAt(path: string): Promise<{ tok: Tokenizer; digest: string }> {
    if (!this.tokenizers.has(path))
      this.tokenizers.set(
        path,
        loadTokenizer(path).then((tok) => ({ tok, digest: filesDigest(path) })),
      );
    return this.tokenizers.get(path)!;
  }

  /**
   * The dataset as `stage` (training `model`) sees it, and its digest (part of the stage's
   * identity): images in the model's form, text read by the model's tokenizer (else the
   * dataset's), problems worded by the stage's `prompt`.
   */
  async forStage(model: CompiledModel, stage: StageView): Promise<StageData> {
    // the image tasks feed images even to a model that takes none (it is then told what the task feeds)
    const form = imageForm(model) ?? (stage.task === "text" ? undefined : defaultForm());
    const key = form ? formKey(form) : "no images";
    if (!this.decoded.has(key)) {
      const load = async () => {
        const t0 = performance.now();
        const splits: Partial<Record<SplitName, LoadedSplit>> = {};
        // one split at a time: each decode already keeps the bounded pool busy
        for (const s of this.splits) splits[s] = await loadSplit(this.index, s, { form: form ?? null });
        if (form) {
          const images = this.splits.reduce((a, s) => a + (splits[s]!.images.length / (form.shape[0] * form.shape[1] * form.shape[2]) || 0), 0);
          this.say(
            `data: ${images.toLocaleString("en-US")} images decoded as ${form.shape.join("×")} for \`${model.name}\` (preprocessing: ${form.preprocess.from}) in ${((performance.now() - t0) / 1000).toFixed(1)} s`,
          );
        }
        return splits;
      };
      this.decoded.set(key, load());
    }
    const splits = await this.decoded.get(key)!;
    let tokenizer = this.index.tokenizer;
    let tokenizerDigest: string | undefined;
    if (model.tokenizer) ({ tok: tokenizer, digest: tokenizerDigest } = await this.tokenizerAt(model.tokenizer));
    if (!tokenizer && stage.task !== "classify")
      throw new UserError(
        `train section \`${stage.name}\` (task "${stage.task}"): model \`${model.name}\` names no tokenizer and ${this.index.dir} has no ${FILES.tokenizer}; declare \`tokenizer "PATH"\` in the model`,
      );
    const data: LoadedDataset = {
      ...this.index,
      splits,
      tokenizer,
      format: promptFormat(stage.prompt, stage.answer),
      ...(tokenizerDigest && { tokenizerDigest }),
    };
    if (tokenizer && stage.task !== "classify")
      this.say(
        `data: \`${stage.name}\` reads text with ${tokenizerDigest ? "the model's" : "the dataset's"} tokenizer ${shownPath(tokenizer.source)} (${tokenizer.size.toLocaleString("en-US")} tokens), prompts ${data.format.name}`,
      );
    const tokens =
      !tokenizer || stage.task === "classify"
        ? undefined
        : { digest: tokenizerDigest ?? filesDigest(join(this.index.dir, FILES.tokenizer)), shown: shownPath(tokenizer.source) };
    return { data, digest: datasetDigest(data), tokens };
  }
}

export interface StageData {
  readonly data: LoadedDataset;
  /** datasetDigest(data): part of the stage's identity */
  readonly digest: string;
  /** the tokenizer its text is in (by content), for stages that read text: stages that share weights must agree */
  readonly tokens?: { readonly digest: string; readonly shown: string };
}

/**
 * Refuses a stage whose text is in other token ids than a backbone stage's it starts from
 * (e.g. a language model pre-trained on the dataset's word-level tokens, fine-tuned with
 * the model's own tokenizer): the embeddings would be read with the wrong ids.
 */
export function checkSameTokens(stage: string, own: StageData, backbones: readonly { readonly stage: string; readonly data: StageData }[]): void {
  for (const b of backbones) {
    if (!own.tokens || !b.data.tokens || own.tokens.digest === b.data.tokens.digest) continue;
    throw new UserError(
      `train section \`${stage}\` tokenizes with ${own.tokens.shown}, but its backbone stage \`${b.stage}\` was trained on text tokenized with ${b.data.tokens.shown}: their token ids differ. Declare the same \`tokenizer\` in both models.`,
    );
  }
}
