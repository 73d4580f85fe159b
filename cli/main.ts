import { usage } from "./usage.js";

// Each command is imported when it runs: `--help` and `classify` must not pay
// for loading the server (OpenTelemetry, pino, onnxruntime, sharp...).
async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case "serve":
      return (await import("./serve-command.js")).serve(rest);
    case "classify":
      return (await import("./classify-command.js")).classify(rest);
    case "model":
      return (await import("./model-command.js")).model(rest);
    case "evaluate":
      return (await import("./evaluate-command.js")).evaluate(rest);
    case undefined:
    case "help":
    case "--help":
    case "-h":
      process.stdout.write(`${usage}\n`);
      return command === undefined ? 2 : 0;
    default:
      process.stderr.write(`unknown command '${command}'\n${usage}\n`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    const code = (err as { code?: unknown } | null)?.code;
    if (typeof code === "string" && code.startsWith("ERR_PARSE_ARGS_")) {
      // An unknown or malformed option is a usage error, like a wrong command.
      process.stderr.write(`${(err as Error).message}\n${usage}\n`);
      process.exitCode = 2;
      return;
    }
    // Matched by name: importing common/config.js here would load zod for --help.
    if (err instanceof Error && err.name === "ConfigError") process.stderr.write(`${err.message}\n`);
    else process.stderr.write(`categorize: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
