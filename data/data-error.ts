import { UserFacingError } from "../util/user-facing-error.ts";

/** A dataset, tokenizer or image file that is missing, damaged or not what dehvf reads: the user's to fix. */
export class DataError extends UserFacingError {
  override name = "DataError";
}
