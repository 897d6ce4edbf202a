import { existsSync } from "node:fs";
import { join } from "node:path";
import { buildDefaultData } from "../data/build.ts";
import { FILES, type LoadedDataset, loadDataset } from "../data/loader.ts";
import type { SplitName } from "../data/scienceqa.ts";
import { UserError } from "../grammar/diagnostics.ts";

export const DEFAULT_DATA_DIR = "out/data/fashion";

/**
 * The dataset a run uses: the default one is built on first use from the installed
 * Fashion-MNIST (no download); a directory the user names must already hold a dataset.
 */
export async function prepareData(dir: string | undefined, say: (line: string) => void, splits: readonly SplitName[] = ["train", "val", "test"]): Promise<LoadedDataset> {
  const at = dir ?? DEFAULT_DATA_DIR;
  if (!dir) {
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
  } else if (!existsSync(join(at, FILES.problems))) throw new UserError(`${at} holds no dataset (no ${FILES.problems}); leave out --data to build the default one`);
  const t0 = performance.now();
  const data = await loadDataset(at, { splits });
  if (!data.tokenizer) throw new UserError(`${at} has no ${FILES.tokenizer}: the tiny models need the dataset's word-level tokenizer`);
  const n = (s: SplitName) => data.splits[s]?.vqa.length ?? 0;
  say(`data: ${n("train")} / ${n("val")} / ${n("test")} problems, ${data.tokenizer.size} tokens, images decoded in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  return data;
}
