/** One step of a teardown: a close, stop or kill, possibly of something a failed `before` never created. */
export type TeardownStep = () => unknown;

/**
 * Runs every step in order, each even when an earlier one failed, so that a
 * node, client or child process is stopped although the test (or its before
 * hook) failed half way or a sibling's close threw; then rethrows the first
 * failure. Steps that must run together go in one step (Promise.all).
 */
export async function closeAll(...steps: TeardownStep[]): Promise<void> {
  const failures: unknown[] = [];
  for (const step of steps) {
    try {
      await step();
    } catch (err) {
      failures.push(err);
    }
  }
  if (failures.length === 1) throw failures[0];
  if (failures.length > 1) throw new AggregateError(failures, `${failures.length} teardown steps failed`);
}
