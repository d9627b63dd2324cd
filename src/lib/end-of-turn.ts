/**
 * Work an event-loop turn defers until its I/O is read (setImmediate), run in phase order whatever
 * order it was scheduled in: first `handoff` (messages to other threads: the turn's audit batch to
 * the SQLite writer, signatures to the signing thread), then `local` (work this thread does itself:
 * signatures made in place). So the writer commits the turn's records while the event loop signs
 * the turn's tokens, instead of starting after them (bench/README.md, fifteenth session).
 */
export type TurnPhase = 'handoff' | 'local';

const queues: Record<TurnPhase, (() => void)[]> = { handoff: [], local: [] };
let scheduled = false;

function run(): void {
  scheduled = false;
  // Each task runs even if one before it throws (as separate setImmediate callbacks would); the
  // first error is thrown afterwards, as an uncaught exception from its own callback would be.
  let failed = false;
  let first: unknown;
  for (const phase of ['handoff', 'local'] as const) {
    const tasks = queues[phase];
    queues[phase] = [];
    for (const task of tasks) {
      try {
        task();
      } catch (e) {
        if (!failed) [failed, first] = [true, e];
      }
    }
  }
  if (failed) throw first;
}

/** Runs `task` once this turn's I/O is read, after every `handoff` task if it is `local`. */
export function atEndOfTurn(phase: TurnPhase, task: () => void): void {
  queues[phase].push(task);
  if (!scheduled) {
    scheduled = true;
    setImmediate(run);
  }
}
