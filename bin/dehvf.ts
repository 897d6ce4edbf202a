import { Command } from "commander";
import { registerCheck } from "./commands/check.ts";
import { registerCompile } from "./commands/compile.ts";
import { registerInfo } from "./commands/info.ts";
import { registerEval } from "./commands/eval.ts";
import { registerGenerate } from "./commands/generate.ts";
import { registerImport } from "./commands/import.ts";
import { registerInspect } from "./commands/inspect.ts";
import { registerRun } from "./commands/run.ts";
import { registerTrain } from "./commands/train.ts";
import { report } from "./report.ts";

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
registerGenerate(program);
registerInspect(program);
registerImport(program);
registerInfo(program);

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
