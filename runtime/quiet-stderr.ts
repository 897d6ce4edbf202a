import { readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { tmpdir } from "node:os";
import { join } from "node:path";

/*
 * Dawn prints two warnings on every adapter request with lavapipe ("maxDynamic…Buffers…
 * artificially reduced …") straight to file descriptor 2 from native code, where Node
 * cannot filter them. While a piece of work runs, fd 2 is pointed at a temp file (dup2
 * through libc, via the koffi FFI); afterwards everything written there is passed on to
 * the real stderr except those lines. Where that is not possible (no koffi, no libc),
 * the work runs as it is and the warnings show.
 */

/** Lines printed from native code that say nothing to a user of dehvf. */
const NOISE = [/^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced from \d+ to \d+ to fit dynamic offset allocation limit\.$/];

interface Libc {
  dup(fd: number): number;
  dup2(fd: number, to: number): number;
  open(path: string, flags: number, mode: number): number;
  close(fd: number): number;
}

let libc: Libc | null | undefined;

function loadLibc(): Libc | null {
  if (libc !== undefined) return libc;
  try {
    const koffi = createRequire(import.meta.url)("koffi") as { load(name: string): { func(sig: string): (...a: unknown[]) => number } };
    const lib = koffi.load(process.platform === "darwin" ? "libc.dylib" : "libc.so.6");
    const [dup, dup2, open, close] = ["int dup(int)", "int dup2(int, int)", "int open(const char *, int, int)", "int close(int)"].map((sig) => lib.func(sig));
    libc = { dup: (fd) => dup(fd), dup2: (fd, to) => dup2(fd, to), open: (p, f, m) => open(p, f, m), close: (fd) => close(fd) };
  } catch {
    libc = null;
  }
  return libc;
}

const O_WRONLY_CREAT_TRUNC = process.platform === "darwin" ? 0x0001 | 0x0200 | 0x0400 : 0o1 | 0o100 | 0o1000;
let counter = 0;

/** Runs `work` with native writes to stderr captured, then prints them minus the known noise. */
export async function withoutNativeNoise<T>(work: () => Promise<T>): Promise<T> {
  const c = process.platform === "win32" ? null : loadLibc();
  if (!c) return work();
  const file = join(tmpdir(), `dehvf-stderr-${process.pid}-${counter++}`);
  const saved = c.dup(2);
  const capture = saved < 0 ? -1 : c.open(file, O_WRONLY_CREAT_TRUNC, 0o600);
  if (capture < 0 || c.dup2(capture, 2) < 0) {
    if (capture >= 0) c.close(capture);
    if (saved >= 0) c.close(saved);
    return work();
  }
  try {
    return await work();
  } finally {
    c.dup2(saved, 2);
    c.close(saved);
    c.close(capture);
    let text = "";
    try {
      text = readFileSync(file, "utf8");
    } finally {
      rmSync(file, { force: true });
    }
    const kept = text.split("\n").filter((line, i, all) => !(i === all.length - 1 && line === "") && !NOISE.some((re) => re.test(line)));
    if (kept.length) process.stderr.write(kept.join("\n") + "\n");
  }
}
