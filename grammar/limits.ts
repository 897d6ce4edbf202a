/**
 * How much a model file may ask of the compiler. A model file is input like any other:
 * a generated or hostile one must end in a located error, never in a stack overflow, an
 * exhausted heap or a run that does not finish. Each bound sits far above what real
 * models use (the shipped ones are under 5 KB, nest expressions at most 10 levels deep and
 * repeat layers at most 32 times) and below where the compiler stops being quick.
 */

/**
 * Bytes in one source file, checked before reading. The lexer keeps ~200 bytes per token,
 * so a dense 1 MiB file (half a million tokens) lexes in well under a second.
 */
export const MAX_SOURCE_BYTES = 1024 * 1024;

/**
 * Tokens in one source file, checked before parsing: Chevrotain's syntax tree costs over
 * 1 KB and about 4 µs per token, so 200,000 tokens parse in under a second.
 */
export const MAX_SOURCE_TOKENS = 200_000;

/**
 * Levels of expression nesting the parser accepts. Its recursive descent uses up to 7.5 KB
 * of stack per level (a `[...]` literal), so 64 levels take under half of V8's default
 * ~1 MB stack, leaving the rest to whoever called the compiler.
 */
export const MAX_EXPR_NESTING = 64;

/**
 * Nested evaluations while elaborating, expressions and calls into blocks together: each
 * expression nests at most MAX_EXPR_NESTING deep, but a forward may call a child block's
 * inside one, and blocks nest up to 100 deep. A level takes about 500 bytes of stack, so
 * 1,000 use about half of it; the shipped models need under 50.
 */
export const MAX_EVAL_DEPTH = 1000;

/**
 * Syntax errors per file, and link errors per program, before the compiler stops
 * looking: past a few dozen they are one mistake seen many times, and garbage input
 * (a binary file) has one per token, each costing ~0.1 ms of Chevrotain's recovery.
 */
export const MAX_ERRORS = 50;

/** Copies one `repeat(n)` may make: real models repeat layers tens of times. */
export const MAX_REPEAT = 4096;

/**
 * Block instances in one model (repeats multiply: `repeat(64)` of a block holding
 * `repeat(64)` makes 4,096). Elaborating one costs tens of µs, so the bound keeps a
 * check within a few seconds.
 */
export const MAX_INSTANCES = 65_536;
