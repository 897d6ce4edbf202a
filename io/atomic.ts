import * as fs from "node:fs";
import * as fsp from "node:fs/promises";
import type { FileHandle } from "node:fs/promises";
import * as path from "node:path";
import { withPath } from "./errno.ts";
import { processAlive } from "./process-identity.ts";

/*
 * Crash-safe writes. A reader (or a resumed run) must see either the previous content or the
 * complete new content, never a prefix: write a sibling temp file (same directory, so rename is
 * atomic on one filesystem), fsync it, rename over the target, fsync the directory so the rename
 * itself survives a power loss.
 */

let counter = 0;

/** A sibling path no other writer (other process, or a concurrent write in this one) will pick. */
export function tempSibling(target: string, tag = "tmp"): string {
  return `${target}.${tag}-${process.pid}-${counter++}`;
}

export async function fsyncDir(dir: string): Promise<void> {
  let h: FileHandle | undefined;
  try {
    h = await fsp.open(dir, "r");
    await h.sync();
  } catch {
    // Directories cannot be opened/fsynced on some platforms (Windows); the rename is still atomic there.
  } finally {
    await h?.close().catch(() => {});
  }
}

function fsyncDirSync(dir: string): void {
  let fd: number | undefined;
  try {
    fd = fs.openSync(dir, "r");
    fs.fsyncSync(fd);
  } catch {
    // See fsyncDir.
  } finally {
    if (fd !== undefined) fs.closeSync(fd);
  }
}

/**
 * Atomically replaces `target` with whatever `write` puts into the handle. `write` may stream
 * (many small writes) so large files never need to be built in memory.
 */
export async function writeFileAtomicStream(target: string, write: (handle: FileHandle) => Promise<void>): Promise<void> {
  const tmp = tempSibling(target);
  let handle: FileHandle | undefined;
  try {
    handle = await fsp.open(tmp, "wx");
    await write(handle);
    await handle.sync();
    await handle.close();
    handle = undefined;
    await fsp.rename(tmp, target);
  } catch (e) {
    await handle?.close().catch(() => {});
    await fsp.rm(tmp, { force: true }).catch(() => {});
    // a failed handle.write carries no path: "no space left on device" must say where
    throw withPath(e, target);
  }
  await fsyncDir(path.dirname(target));
}

export async function writeFileAtomic(target: string, data: string | Uint8Array): Promise<void> {
  await writeFileAtomicStream(target, async (h) => {
    await h.writeFile(data);
  });
}

/** Synchronous variant for callers that cannot await (e.g. log repair before the first append). */
export function writeFileAtomicSync(target: string, data: string | Uint8Array): void {
  const tmp = tempSibling(target);
  let fd: number | undefined;
  try {
    fd = fs.openSync(tmp, "wx");
    fs.writeFileSync(fd, data);
    fs.fsyncSync(fd);
    fs.closeSync(fd);
    fd = undefined;
    fs.renameSync(tmp, target);
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    fs.rmSync(tmp, { force: true });
    throw withPath(e, target);
  }
  fsyncDirSync(path.dirname(target));
}

export async function writeJsonAtomic(target: string, value: unknown, space: number = 2): Promise<void> {
  const text = JSON.stringify(value, null, space);
  if (text === undefined) throw new TypeError(`writeJsonAtomic(${target}): value is not JSON-serialisable`);
  await writeFileAtomic(target, text + "\n");
}

async function fsyncTree(dir: string): Promise<void> {
  for (const entry of await fsp.readdir(dir, { withFileTypes: true })) {
    const p = path.join(dir, entry.name);
    if (entry.isDirectory()) await fsyncTree(p);
    else if (entry.isFile()) {
      const h = await fsp.open(p, "r");
      try {
        await h.sync();
      } finally {
        await h.close();
      }
    }
  }
  await fsyncDir(dir);
}

/**
 * Builds a whole directory (a checkpoint) and swaps it into place.
 *
 * `build` fills a fresh `<dir>.tmp-<pid>-<n>`; every file in it is fsynced (so `build` can use
 * plain writes), then the old `dir` is renamed to `<dir>.old-<pid>-<n>`, the new one renamed in,
 * and the old one deleted. POSIX has no atomic directory exchange, so there is a short window
 * where `dir` is absent but the old copy sits intact beside it; `recoverDirAtomic` puts it back.
 * A kill during `build` leaves only a stale `.tmp-` sibling, which recovery deletes.
 */
export async function writeDirAtomic(dir: string, build: (tmpDir: string) => Promise<void>): Promise<void> {
  const tmp = tempSibling(dir, "tmp");
  await fsp.mkdir(path.dirname(dir), { recursive: true });
  try {
    await fsp.mkdir(tmp);
    await build(tmp);
    await fsyncTree(tmp);
  } catch (e) {
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
  const old = tempSibling(dir, "old");
  let hadOld = true;
  try {
    await fsp.rename(dir, old);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code !== "ENOENT") {
      await fsp.rm(tmp, { recursive: true, force: true }).catch(() => {});
      throw e;
    }
    hadOld = false;
  }
  try {
    await fsp.rename(tmp, dir);
  } catch (e) {
    if (hadOld) await fsp.rename(old, dir).catch(() => {});
    await fsp.rm(tmp, { recursive: true, force: true }).catch(() => {});
    throw e;
  }
  await fsyncDir(path.dirname(dir));
  if (hadOld) await fsp.rm(old, { recursive: true, force: true });
}

export type RecoverResult = "intact" | "restored" | "missing";

/**
 * Call before reading a directory written by `writeDirAtomic` (e.g. on resume). If a kill hit
 * the swap window, restores the old copy; deletes leftovers of writers that are no longer
 * running (a live writer's temp dirs are left alone).
 */
export async function recoverDirAtomic(dir: string): Promise<RecoverResult> {
  const parent = path.dirname(dir);
  const base = path.basename(dir);
  let names: string[];
  try {
    names = await fsp.readdir(parent);
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === "ENOENT") return "missing";
    throw e;
  }
  const re = /^\.(tmp|old)-(\d+)-(\d+)$/;
  const olds: { name: string; pid: number; n: number }[] = [];
  const tmps: { name: string; pid: number }[] = [];
  for (const name of names) {
    if (!name.startsWith(base + ".")) continue;
    const m = re.exec(name.slice(base.length));
    if (!m) continue;
    const pid = Number(m[2]);
    if (processAlive(pid) && pid !== process.pid) continue;
    if (m[1] === "old") olds.push({ name, pid, n: Number(m[3]) });
    else tmps.push({ name, pid });
  }
  let result: RecoverResult = fs.existsSync(dir) ? "intact" : "missing";
  if (result === "missing" && olds.length > 0) {
    // Only one swap can be in flight per writer; the newest `.old` is the last complete checkpoint.
    olds.sort((a, b) => a.n - b.n);
    const newest = olds.pop()!;
    await fsp.rename(path.join(parent, newest.name), dir);
    await fsyncDir(parent);
    result = "restored";
  }
  for (const o of olds) await fsp.rm(path.join(parent, o.name), { recursive: true, force: true });
  for (const t of tmps) if (t.pid !== process.pid) await fsp.rm(path.join(parent, t.name), { recursive: true, force: true });
  return result;
}
