import { readFileSync } from "node:fs";

/** Whether a process with this pid exists (EPERM: it does, owned by someone else). */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

function readText(path: string): string | null {
  try {
    return readFileSync(path, "utf8").trim();
  } catch {
    return null;
  }
}

/**
 * When the process started, in clock ticks since boot (/proc/PID/stat field 22), where the
 * system says: with the pid it names one process, even after the pid is reused.
 */
export function processStart(pid: number): string | null {
  const stat = readText(`/proc/${pid}/stat`);
  // the command name (field 2) is in parentheses and may hold spaces: count fields after it
  return stat ? (stat.slice(stat.lastIndexOf(")") + 2).split(" ")[19] ?? null) : null;
}

/** This boot of the machine, where the system says: start times count from it. */
export function bootId(): string | null {
  return readText("/proc/sys/kernel/random/boot_id");
}
