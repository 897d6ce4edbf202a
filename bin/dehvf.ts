import { Command } from "commander";
import { DehvfError, UserError } from "../grammar/diagnostics.ts";
import { registerCheck } from "./commands/check.ts";
import { registerCompile } from "./commands/compile.ts";
import { registerInfo } from "./commands/info.ts";
import { registerEval } from "./commands/eval.ts";
import { registerRun } from "./commands/run.ts";
import { registerTrain } from "./commands/train.ts";

const program = new Command()
  .name("dehvf")
  .description("Compile, check and run .dehvf vision-language models (DEHVF, MemVP, concat fusion)")
  .version("0.1.0")
  .showHelpAfterError();

registerCheck(program);
registerCompile(program);
registerRun(program);
registerTrain(program);
registerEval(program);
registerInfo(program);

/** Known failures print their located diagnostics; anything else is a bug in dehvf. */
function report(err: unknown): number {
  if (err instanceof DehvfError) {
    process.stderr.write(`${err.render()}\n`);
    return 1;
  }
  if (err instanceof UserError) {
    process.stderr.write(`error: ${err.message}\n`);
    return 1;
  }
  const e = err as Error;
  process.stderr.write(`internal error: ${e?.message ?? String(err)}\n`);
  if (process.env.DEHVF_DEBUG) process.stderr.write(`${e?.stack ?? ""}\n`);
  else process.stderr.write("(this is a bug in dehvf; set DEHVF_DEBUG=1 for a stack trace)\n");
  return 2;
}

let code = 0;
try {
  await program.parseAsync(process.argv);
} catch (err) {
  code = report(err);
}
// Exit explicitly (Dawn's binding can keep the event loop alive after the device is
// gone), but only once stdout and stderr are flushed: piped output is written async.
const drained = (s: NodeJS.WriteStream) => new Promise<void>((done) => s.write("", () => done()));
await Promise.all([drained(process.stdout), drained(process.stderr)]);
process.exit(code);
