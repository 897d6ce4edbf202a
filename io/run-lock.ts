import * as fs from "node:fs";
import { hostname } from "node:os";
import { join } from "node:path";
import { tempSibling } from "./atomic.ts";
import { bootId, processAlive, processStart } from "./process-identity.ts";
import { UserFacingError } from "../util/user-facing-error.ts";

/*
 * One run per output directory. The lock file names its owner by pid, host, boot and the
 * process's start time: a pid alone can be reused after a crash or a reboot, so a lock is
 * stale only when its process is gone, its boot is over, or the pid now belongs to a
 * process that started at another time. It is created by link(2), which is atomic and
 * never overwrites, so of two runs starting at once exactly one gets it.
 */

export const LOCK_FILE = ".dehvf-lock";

interface Owner {
  readonly pid: number;
  readonly host: string;
  readonly boot: string | null;
  /** start time of the process in clock ticks since boot (/proc/PID/stat field 22), where the system says */
  readonly start: string | null;
  readonly since: string;
  readonly command: string;
}

export class RunLockedError extends UserFacingError {
  override name = "RunLockedError";
}

function me(command: string): Owner {
  return { pid: process.pid, host: hostname(), boot: bootId(), start: processStart(process.pid), since: new Date().toISOString(), command };
}

function readOwner(file: string): Owner | undefined {
  try {
    const o = JSON.parse(fs.readFileSync(file, "utf8")) as Owner;
    return Number.isInteger(o.pid) && typeof o.host === "string" ? o : undefined;
  } catch {
    return undefined;
  }
}

/** Why the owner's run is over, or undefined while it may still be running (or that cannot be told from here). */
function staleReason(o: Owner): string | undefined {
  if (o.host !== hostname()) return undefined;
  const boot = bootId();
  if (o.boot && boot && o.boot !== boot) return "the machine restarted since";
  if (!processAlive(o.pid)) return `process ${o.pid} is gone`;
  const start = processStart(o.pid);
  if (o.start && start && o.start !== start) return `pid ${o.pid} now belongs to another process`;
  return undefined;
}

export interface RunLock {
  /** why an earlier lock was taken over, if one was */
  readonly tookOver?: string;
  release(): void;
}

/** Takes `dir`'s lock for this process, or throws RunLockedError saying who holds it. */
export function acquireRunLock(dir: string, command: string): RunLock {
  fs.mkdirSync(dir, { recursive: true });
  const file = join(dir, LOCK_FILE);
  const mine = me(command);
  const tmp = tempSibling(file);
  fs.writeFileSync(tmp, JSON.stringify(mine) + "\n");
  let tookOver: string | undefined;
  try {
    for (let attempt = 0; ; attempt++) {
      try {
        fs.linkSync(tmp, file);
        break;
      } catch (e) {
        if ((e as NodeJS.ErrnoException).code !== "EEXIST") throw e;
      }
      const owner = readOwner(file);
      const stale = owner ? staleReason(owner) : "the lock file is unreadable";
      if (!stale || attempt > 0) {
        const who = owner ? `pid ${owner.pid} on ${owner.host}, since ${owner.since}: ${owner.command}` : "unknown owner";
        throw new RunLockedError(
          `${dir} is in use by another dehvf run (${who}). Wait for it to finish or pick another --out; if no such run exists any more, delete ${file}.`,
        );
      }
      tookOver = stale;
      fs.rmSync(file, { force: true });
    }
  } finally {
    fs.rmSync(tmp, { force: true });
  }
  let held = true;
  const release = () => {
    if (!held) return;
    held = false;
    process.removeListener("exit", release);
    // only our own lock: never one a later run took over
    if (readOwner(file)?.pid === mine.pid && readOwner(file)?.since === mine.since) fs.rmSync(file, { force: true });
  };
  process.on("exit", release);
  return { tookOver, release };
}
