import { DehvfError } from "../grammar/diagnostics.ts";
import { describeSystemError } from "../io/errno.ts";
import { UserFacingError } from "../util/user-facing-error.ts";

/**
 * Prints a failure and returns the exit code: 1 for what the user or the environment can
 * fix (located diagnostics, bad files, missing paths, a full disk, no GPU), 2 only for a
 * bug in dehvf, so scripts and bug reports can tell them apart.
 */
export function report(err: unknown, write: (text: string) => void = (t) => process.stderr.write(t)): number {
  if (err instanceof DehvfError) {
    write(`${err.render()}\n`);
    return 1;
  }
  // UserError, NoAdapterError, SafetensorsError, DataError, … all say what and where
  if (err instanceof UserFacingError) {
    write(`error: ${err.message}\n`);
    return 1;
  }
  const system = describeSystemError(err);
  if (system) {
    write(`error: ${system}\n`);
    return 1;
  }
  const e = err as Error;
  write(`internal error: ${e?.message ?? String(err)}\n`);
  if (process.env.DEHVF_DEBUG) write(`${e?.stack ?? ""}\n`);
  else write("(this is a bug in dehvf; set DEHVF_DEBUG=1 for a stack trace)\n");
  return 2;
}
