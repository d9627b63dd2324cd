import { afterEach, describe, expect, it } from 'vitest';
import { readdirSync, readFileSync } from 'node:fs';
import { Writable } from 'node:stream';
import { Worker } from 'node:worker_threads';
import { generateKeyPairSync, verify, type KeyObject } from 'node:crypto';
import { createLogger } from '../log/logger.js';
import { es256Signature } from './es256.js';
import { createSigningThread, type SigningThread, type SigningThreadOptions } from './signing-thread.js';

const { privateKey, publicKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const other = generateKeyPairSync('ec', { namedCurve: 'P-256' });
const valid = (pub: KeyObject, input: string, sig: string) => verify('sha256', Buffer.from(input), { key: pub, dsaEncoding: 'ieee-p1363' }, Buffer.from(sig, 'base64url'));

let threads: SigningThread[] = [];
afterEach(async () => {
  await Promise.all(threads.map((t) => t.close()));
  threads = [];
});

function thread(opts: Partial<SigningThreadOptions> & Pick<SigningThreadOptions, 'mode'>) {
  const lines: Record<string, unknown>[] = [];
  const logger = createLogger({ level: 'debug', destination: new Writable({ write: (c: Buffer, _e, cb) => (lines.push(...c.toString().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Record<string, unknown>)), cb()) }) });
  let inPlace = 0;
  const t = createSigningThread({ logger, signInPlace: (k, i) => (inPlace++, es256Signature(k, i)), ...opts });
  threads.push(t);
  return { t, lines, inPlace: () => inPlace };
}

describe('signing thread', () => {
  it('on: every signature of a turn is made on the thread, each valid for its own input and key', async () => {
    const { t, inPlace } = thread({ mode: 'on' });
    const inputs = Array.from({ length: 40 }, (_, i) => `header.payload-${i}`);
    const sigs = await Promise.all(inputs.map((input, i) => t.offer(i % 2 ? 'b' : 'a', i % 2 ? other.privateKey : privateKey, input)!));
    sigs.forEach((sig, i) => expect(valid(i % 2 ? other.publicKey : publicKey, inputs[i]!, sig)).toBe(true));
    expect(valid(publicKey, inputs[1]!, sigs[1]!)).toBe(false); // signed with the other key
    expect(inPlace()).toBe(0);
    // A later turn with a key already on the thread.
    expect(valid(publicKey, 'next.turn', await t.offer('a', privateKey, 'next.turn')!)).toBe(true);
  });

  it.runIf(process.platform === 'linux')('the thread carries its name for `top -H` and `ps -L`', async () => {
    const { t } = thread({ mode: 'on' });
    await t.offer('a', privateKey, 'x.y');
    const names = readdirSync('/proc/self/task').map((tid) => readFileSync(`/proc/self/task/${tid}/comm`, 'utf8').trim());
    expect(names).toContain('ags-signer');
  });

  it('off: nothing is offered to a thread', () => {
    const { t } = thread({ mode: 'off' });
    expect(t.offer('a', privateKey, 'x.y')).toBeUndefined();
    expect(t.active()).toBe(false);
  });

  it('auto: moves to the thread after two samples in a row above 98 % event-loop utilization, and back only below 60 %', async () => {
    let u = 0.5;
    const { t, lines } = thread({ mode: 'auto', utilization: () => u });
    expect(t.offer('a', privateKey, 'x.y')).toBeUndefined(); // starts in place
    const seen: boolean[] = [];
    for (const next of [0.97, 0.985, 0.99, 0.7, 0.61, 0.59, 0.9, 0.995, 0.99]) {
      u = next;
      t.sample();
      seen.push(t.active());
    }
    expect(seen).toEqual([false, false, true, true, true, false, false, false, true]);
    expect(valid(publicKey, 'x.y', await t.offer('a', privateKey, 'x.y')!)).toBe(true);
    const moves = lines.filter((l) => String(l.msg).startsWith('event loop'));
    expect(moves.map((l) => l.signingThread)).toEqual([true, false, true]);
  });

  it('auto: one busy sample (start-up, a burst) does not move signing to the thread', () => {
    let u = 1;
    const { t, lines } = thread({ mode: 'auto', utilization: () => u });
    t.sample(); // the window that holds start-up
    expect(t.active()).toBe(false);
    for (const next of [0.3, 0.99, 0.2, 0.995, 0.1]) {
      u = next;
      t.sample();
      expect(t.active()).toBe(false);
    }
    expect(lines.filter((l) => String(l.msg).startsWith('event loop'))).toEqual([]);
  });

  it('a thread that dies: what it owed and everything after is signed in place, logged once', async () => {
    const dying = () => new Worker("require('node:worker_threads').parentPort.on('message', () => process.exit(7))", { eval: true });
    const { t, lines, inPlace } = thread({ mode: 'on', startWorker: dying });
    const owed = await Promise.all(['a.1', 'a.2', 'a.3'].map((input) => t.offer('a', privateKey, input)!));
    owed.forEach((sig, i) => expect(valid(publicKey, `a.${i + 1}`, sig)).toBe(true));
    expect(inPlace()).toBe(3);
    expect(t.active()).toBe(false);
    expect(t.offer('a', privateKey, 'a.4')).toBeUndefined();
    const errors = lines.filter((l) => l.msg === 'signing thread failed: signing on the event loop from now on');
    expect(errors).toHaveLength(1);
    expect(errors[0]!.reason).toBe('exited with code 7');
  });

  it('a signature the thread cannot make fails its request with the in-place error, not the others', async () => {
    const { t } = thread({ mode: 'on' });
    const good = t.offer('a', privateKey, 'a.ok')!;
    const bad = t.offer('pub', publicKey, 'a.bad')!; // a public key cannot sign
    await expect(bad).rejects.toThrow();
    expect(valid(publicKey, 'a.ok', await good)).toBe(true);
    expect(t.active()).toBe(true);
  });

  it('close: signatures still owed are made in place, never dropped', async () => {
    const { t, inPlace } = thread({ mode: 'on' });
    const owed = t.offer('a', privateKey, 'c.1')!; // queued for this turn's message, not sent yet
    await t.close();
    expect(valid(publicKey, 'c.1', await owed)).toBe(true);
    expect(inPlace()).toBe(1);
    expect(t.offer('a', privateKey, 'c.2')).toBeUndefined();
  });
});
