import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createDpopNonces, DPOP_NONCE_WINDOW_SECONDS } from './dpop.js';

describe('server-provided DPoP nonces (RFC 9449 §8)', () => {
  const kek = randomBytes(32);
  let t = Date.UTC(2026, 11, 7, 12, 0, 5);
  const clock = { now: () => new Date(t) };

  it('accepts a nonce in its window and the next, on any replica with the same KEK, and none later', () => {
    const a = createDpopNonces(kek, clock);
    const replica = createDpopNonces(Buffer.from(kek), clock);
    const n = a.current();
    expect(a.valid(n)).toBe(true);
    expect(replica.valid(n)).toBe(true);
    expect(replica.current()).toBe(n);
    t += DPOP_NONCE_WINDOW_SECONDS * 1000;
    expect(a.valid(n)).toBe(true); // the next window still takes it
    expect(a.current()).not.toBe(n);
    t += DPOP_NONCE_WINDOW_SECONDS * 1000;
    expect(a.valid(n)).toBe(false);
  });

  it('refuses a nonce made under another key, a future window, and anything malformed', () => {
    const a = createDpopNonces(kek, clock);
    const other = createDpopNonces(randomBytes(32), clock);
    expect(a.valid(other.current())).toBe(false);
    const [w, mac] = a.current().split('.');
    expect(a.valid(`${(parseInt(w!, 36) + 1).toString(36)}.${mac}`)).toBe(false);
    for (const bad of [undefined, 42, '', 'x', `${w}.`, `.${mac}`, `${w}.${mac}x`, `${w}.${mac!.slice(1)}`, `${w}.${mac}.${mac}`, 'a'.repeat(65), `-1.${mac}`]) expect(a.valid(bad), String(bad)).toBe(false);
  });
});
