import { usage } from "./usage.js";

/** Prints a usage error; its exit code is 2. */
export function usageError(message: string): number {
  process.stderr.write(`${message}\n${usage}\n`);
  return 2;
}

/** A whole number in 1..max, or undefined. */
export function positiveInt(text: string, max: number): number | undefined {
  const n = Number(text);
  return Number.isInteger(n) && n >= 1 && n <= max ? n : undefined;
}
