import { closeSync, fstatSync, openSync, readSync } from "node:fs";
import { withPath } from "../errno.ts";
import { WeightsError } from "./errors.ts";

/** Runs `f` on the open file (its descriptor and size), closing it afterwards; a system error names the file. */
export function withFile<T>(file: string, f: (fd: number, size: number) => T): T {
  let fd: number;
  try {
    fd = openSync(file, "r");
  } catch (e) {
    throw withPath(e, file);
  }
  try {
    return f(fd, fstatSync(fd).size);
  } finally {
    closeSync(fd);
  }
}

/** Bytes `[position, position + length)` of an open file, or a WeightsError at a short read. */
export function readAt(fd: number, file: string, position: number, length: number): Buffer {
  const buf = Buffer.alloc(length);
  let done = 0;
  while (done < length) {
    const n = readSync(fd, buf, done, length - done, position + done);
    if (n === 0) throw new WeightsError(file, `unexpected end of file at byte ${position + done}`);
    done += n;
  }
  return buf;
}
