import { during } from "../io/progress.ts";
import type { CompileHook } from "./executor.ts";

/**
 * A CompileHook that says `what` ("compiling the training step's 157 pipelines") at once
 * and, while the driver compiles, how many are done (io/progress.ts `during`).
 */
export function announcedCompile(say: (line: string) => void, what: (pipelines: number) => string, note?: string): CompileHook {
  return (work, n) => {
    let done = 0;
    return during(say, what(n), () => work((d) => (done = d)), { ...(note && { note }), status: () => (done ? `${done} of ${n} compiled` : undefined) });
  };
}
