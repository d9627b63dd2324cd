export interface Clock {
  now(): Date;
}
export const systemClock: Clock = { now: () => new Date() };
export const epochSeconds = (d: Date): number => Math.floor(d.getTime() / 1000);

/** Parses "90s", "15m", "2h", "1d" or a number of seconds into seconds. */
export function parseDuration(input: string | number): number {
  if (typeof input === 'number') return input;
  const m = /^(\d+)\s*(s|m|h|d)?$/.exec(input.trim());
  if (!m) throw new Error(`"${input}" is not a duration (use e.g. 90s, 15m, 2h, 1d)`);
  const n = Number(m[1]);
  const unit = m[2] ?? 's';
  return n * { s: 1, m: 60, h: 3600, d: 86400 }[unit as 's' | 'm' | 'h' | 'd'];
}
