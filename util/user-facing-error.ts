/**
 * A failure the user can act on rather than a bug in dehvf: a damaged or foreign file, a
 * machine or device too small for the job. The command line prints its message without a
 * stack and exits 1. It lives in util/, below every other folder, so that readers and the
 * runtime can throw it without depending on the language front end (grammar/'s UserError
 * is the same idea above it).
 */
export class UserFacingError extends Error {
  override name = "UserFacingError";
}
