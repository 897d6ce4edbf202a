import { constants } from "node:buffer";
import { totalmem } from "node:os";
import type { HostLimits } from "../compiler/size-limits.ts";

/** This machine's memory and the longest typed array this Node allocates (for compiler/size-limits.ts: checkSizes). */
export function hostLimits(): HostLimits {
  return { bytes: totalmem(), maxElements: constants.MAX_LENGTH };
}
