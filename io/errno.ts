import { statSync } from "node:fs";
import { dirname } from "node:path";

/** An error from the operating system (`code` like "ENOSPC", the `syscall` that failed, often the `path`). */
export interface SystemError extends Error {
  code: string;
  syscall: string;
  path?: string;
  dest?: string;
}

/**
 * What the environment can do to a run: a missing or unwritable path, a full disk, too
 * many open files. Codes not listed (EBADF, EINVAL, ...) mean dehvf misused the system
 * call, which is a bug and reported as one.
 */
const REASONS: Readonly<Record<string, string>> = {
  ENOENT: "no such file or directory",
  ENOTDIR: "a part of the path is not a directory",
  EISDIR: "it is a directory, not a file,",
  EPERM: "operation not permitted",
  EACCES: "permission denied",
  ENOSPC: "no space left on device",
  EDQUOT: "disk quota exceeded",
  EROFS: "read-only file system",
  EMFILE: "too many open files in this process",
  ENFILE: "too many open files on this system",
  EEXIST: "it already exists",
  ENOTEMPTY: "the directory is not empty",
  ENAMETOOLONG: "file name too long",
  ELOOP: "too many levels of symbolic links",
  EFBIG: "file too large",
  EIO: "input/output error",
  EXDEV: "source and target are on different file systems",
  EBUSY: "resource busy",
  ETXTBSY: "file busy",
  ENOMEM: "out of memory",
};

const VERBS: Readonly<Record<string, string>> = {
  open: "opening",
  read: "reading",
  write: "writing",
  fsync: "syncing",
  close: "closing",
  mkdir: "creating directory",
  mkdtemp: "creating a directory in",
  rmdir: "removing directory",
  rm: "removing",
  unlink: "removing",
  rename: "renaming",
  copyfile: "copying",
  scandir: "listing",
  opendir: "listing",
  stat: "looking up",
  lstat: "looking up",
  fstat: "looking up",
  access: "checking",
  ftruncate: "truncating",
  symlink: "linking",
  link: "linking",
  readlink: "following",
  chmod: "changing permissions of",
};

export function isSystemError(e: unknown): e is SystemError {
  return e instanceof Error && typeof (e as Partial<SystemError>).code === "string" && typeof (e as Partial<SystemError>).syscall === "string";
}

/**
 * Adds the file a FileHandle call was working on: errors from `handle.write` or
 * `handle.read` carry no path, and "no space left on device" alone does not say where.
 */
export function withPath(e: unknown, path: string): unknown {
  if (isSystemError(e) && e.path === undefined) e.path = path;
  return e;
}

/** For ENOTDIR: the nearest ancestor of `path` that exists but is not a directory. */
function fileInTheWay(path: string): string | undefined {
  for (let p = dirname(path); p !== dirname(p); p = dirname(p)) {
    const st = statSync(p, { throwIfNoEntry: false });
    if (st) return st.isDirectory() ? undefined : p;
  }
  return undefined;
}

/**
 * A system error caused by the environment in plain words with the path, e.g. "no space
 * left on device while writing /x/y"; undefined for anything else (including system
 * errors that only a bug causes).
 */
export function describeSystemError(e: unknown): string | undefined {
  if (!isSystemError(e) || !(e.code in REASONS)) return undefined;
  const inTheWay = e.code === "ENOTDIR" && e.path ? fileInTheWay(e.path) : undefined;
  const reason = inTheWay ? `${inTheWay} is a file, not a directory,` : REASONS[e.code];
  const what = e.path === undefined ? "" : ` ${e.path}${e.dest === undefined ? "" : ` to ${e.dest}`}`;
  return `${reason} while ${VERBS[e.syscall] ?? e.syscall}${what}`;
}
