import { closeSync, constants, fstatSync, openSync, readSync, type Stats } from "node:fs";
import { MAX_SOURCE_BYTES } from "./limits.ts";

export type SourceRead = { readonly text: string } | { readonly problem: string };

function kindOf(st: Stats): string {
  if (st.isDirectory()) return "a directory";
  if (st.isFIFO()) return "a named pipe";
  if (st.isCharacterDevice()) return "a character device";
  if (st.isBlockDevice()) return "a block device";
  if (st.isSocket()) return "a socket";
  return "not a regular file";
}

const tooBig = (shown: string, what: string) => `${shown} ${what}; model files may be at most ${MAX_SOURCE_BYTES / 2 ** 20} MiB`;

/**
 * Reads a model file as UTF-8, refusing what is not a regular file (a directory,
 * /dev/zero, a FIFO) or is over MAX_SOURCE_BYTES, without reading more than the limit.
 * Opens non-blocking, so a FIFO without a writer cannot stall the check, and stats the
 * open descriptor, so what is checked is what is read. `shown` names the file in problems.
 */
export function readSource(abs: string, shown: string): SourceRead {
  let fd: number;
  try {
    fd = openSync(abs, constants.O_RDONLY | (constants.O_NONBLOCK ?? 0));
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === "ENOENT") return { problem: `no such file: ${shown}` };
    if (code === "EACCES" || code === "EPERM") return { problem: `cannot read ${shown}: permission denied` };
    return { problem: `cannot read ${shown}: ${(err as Error).message}` };
  }
  try {
    const st = fstatSync(fd);
    if (!st.isFile()) return { problem: `${shown} is ${kindOf(st)}, not a model file` };
    if (st.size > MAX_SOURCE_BYTES) return { problem: tooBig(shown, `is ${st.size.toLocaleString("en-US")} bytes`) };
    // The size can be stale (a file still growing, /proc reports 0): read until end of
    // file, but never past the limit.
    const buf = Buffer.alloc(MAX_SOURCE_BYTES + 1);
    let n = 0;
    while (n < buf.length) {
      const got = readSync(fd, buf, n, buf.length - n, null);
      if (got === 0) break;
      n += got;
    }
    if (n > MAX_SOURCE_BYTES) return { problem: tooBig(shown, "grew past that while being read") };
    return { text: buf.toString("utf8", 0, n) };
  } catch (err) {
    return { problem: `cannot read ${shown}: ${(err as Error).message}` };
  } finally {
    closeSync(fd);
  }
}
