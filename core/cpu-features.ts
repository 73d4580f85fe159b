import { readFileSync } from "node:fs";
import { arch } from "node:os";

let cached: boolean | undefined;

/**
 * True on x86-64 processors without a VNNI dot-product instruction (AVX2-only
 * or AVX-512 without VNNI, e.g. many AMD EPYC and older Xeons). There
 * onnxruntime's u8s8 int8 GEMM sums pairs of products in 16-bit registers
 * that saturate, and an int8 model's answers drift far from the reference
 * (measured with the shared MobileNetV2 int8: espresso 0.638 instead of 0.995,
 * the astronaut photo's top-1 a different class). onnxruntime's
 * `session.x64quantprecision` widens those sums to avoid it.
 */
export function int8GemmSaturates(): boolean {
  if (cached !== undefined) return cached;
  if (arch() !== "x64") return (cached = false);
  try {
    const flags = /^flags\s*:(.*)$/m.exec(readFileSync("/proc/cpuinfo", "utf8"))?.[1]?.split(/\s+/) ?? [];
    cached = !flags.some((f) => f === "avx512_vnni" || f === "avx_vnni" || f === "amx_int8");
  } catch {
    // No /proc/cpuinfo (not Linux): nothing known, keep the fast kernels.
    cached = false;
  }
  return cached;
}
