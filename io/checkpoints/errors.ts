import { UserFacingError } from "../../util/user-facing-error.ts";

/**
 * A checkpoint that cannot be used as asked: a missing file or key, an unknown
 * architecture, a shape or dtype that does not fit. Names the file and, where there is
 * one, the tensor or config key; the command line prints it and exits 1.
 */
export class WeightsError extends UserFacingError {
  override name = "WeightsError";
  constructor(
    readonly file: string,
    readonly reason: string,
    readonly key?: string,
  ) {
    super(`${file}${key === undefined ? "" : ` (${key})`}: ${reason}`);
  }
}
