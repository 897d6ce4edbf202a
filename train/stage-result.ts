import { existsSync } from "node:fs";
import * as fsp from "node:fs/promises";
import { join } from "node:path";
import { fsyncDir, writeFileAtomic } from "../io/atomic.ts";
import { loadMeta, STAGE_FILES } from "./checkpoint.ts";

/*
 * A finished stage is published from `work/` into its directory file by file, each by an
 * atomic rename, `final.safetensors` last: it is the mark of a finished result, so until it
 * moves, the previous result's files (or none) are what the directory means. A kill in
 * between leaves a complete result in `work/`, which the next run moves on before anything
 * else (publishPending). Nothing of a finished run is replaced before its replacement is
 * complete on disk.
 */

const PUBLISHED = [STAGE_FILES.metrics, STAGE_FILES.plot, STAGE_FILES.eval, STAGE_FILES.final] as const;

export const workDir = (dir: string) => join(dir, STAGE_FILES.work);

/** Moves a result that is complete in `work/` into `dir`, and drops the work area. */
export async function publishResult(dir: string): Promise<void> {
  const work = workDir(dir);
  // the checkpoint goes first: from here on the complete result in work/ is what a rerun recovers
  await fsp.rm(join(work, STAGE_FILES.checkpoint), { recursive: true, force: true });
  for (const f of PUBLISHED) if (existsSync(join(work, f))) await fsp.rename(join(work, f), join(dir, f));
  await fsyncDir(dir);
  await fsp.rm(work, { recursive: true, force: true });
}

/** Finishes publishing a result a kill interrupted; true when there was one. */
export async function publishPending(dir: string): Promise<boolean> {
  const pending = join(workDir(dir), STAGE_FILES.final);
  if (!existsSync(pending)) return false;
  // written atomically, so it is whole; still, a file that is not one of ours is left alone
  try {
    await loadMeta(pending);
  } catch {
    return false;
  }
  await publishResult(dir);
  return true;
}

/**
 * Takes a finished result made elsewhere (a shipped backbone, another --out): its files are
 * copied into `work/` and published like a result trained here, so a kill midway leaves
 * either the old result or the new one. The caller checks the copy before trusting it.
 */
export async function importResult(from: string, dir: string): Promise<void> {
  const work = workDir(dir);
  await fsp.mkdir(work, { recursive: true });
  for (const f of PUBLISHED) if (existsSync(join(from, f))) await writeFileAtomic(join(work, f), await fsp.readFile(join(from, f)));
  await publishResult(dir);
}
