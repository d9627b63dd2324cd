/**
 * What this machine charges for the two things the exchange's hot path leans on, so runs on
 * different machines can be read side by side (bench/README.md):
 *
 *   - an ES256 signature with node:crypto (the broker's signing path, src/keys/es256.ts), one thread;
 *   - a hand-off to a helper thread (the signing and SQLite writer threads): what one
 *     `postMessage` costs the sender when the thread sleeps (the kernel must wake it; on some
 *     VMs that is tens of µs) and when it is busy (~1 µs).
 *
 *   node --import tsx bench/machine.ts
 */
import { generateKeyPairSync } from 'node:crypto';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { es256Signature } from '../src/keys/es256.js';
import { timed } from './jose-raw.js';

export interface MachineCosts {
  /** node:crypto ES256 signatures per second, one thread. */
  es256SignPerSec: number;
  /** Sender's time for one postMessage to a sleeping thread, µs (median). */
  wakeIdleUs: number;
  /** Sender's time for one postMessage to a thread that is running, µs (median). */
  postBusyUs: number;
}

function signRate(seconds: number): Promise<number> {
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-256' });
  const input = `${Buffer.from('{"alg":"ES256","kid":"bench","typ":"at+jwt"}').toString('base64url')}.${Buffer.from('x'.repeat(400)).toString('base64url')}`;
  return timed(seconds, () => es256Signature(privateKey, input));
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1]!;

/** The thread answers every message; 'busy' keeps it running for 20 ms first. */
const ECHO = `const { parentPort } = require('node:worker_threads');
parentPort.on('message', (m) => { if (m === 'busy') { const t = Date.now(); while (Date.now() - t < 20); } parentPort.postMessage(m); });`;

async function handOffCosts(samples: number): Promise<{ wakeIdleUs: number; postBusyUs: number }> {
  const w = new Worker(ECHO, { eval: true });
  const reply = () => new Promise<unknown>((r) => w.once('message', r));
  try {
    await new Promise<void>((r) => w.once('online', r));
    const idle: number[] = [];
    for (let i = 0; i < samples; i++) {
      await new Promise((r) => setTimeout(r, 1)); // let the thread fall asleep
      const t = performance.now();
      w.postMessage(i);
      idle.push((performance.now() - t) * 1000);
      await reply();
    }
    const busy: number[] = [];
    for (let round = 0; round < 10; round++) {
      const done = new Promise<void>((r) => {
        let left = 21;
        const on = () => {
          if (--left === 0) {
            w.off('message', on);
            r();
          }
        };
        w.on('message', on);
      });
      w.postMessage('busy');
      await new Promise((r) => setTimeout(r, 2)); // it is spinning now
      for (let i = 0; i < 20; i++) {
        const t = performance.now();
        w.postMessage(i);
        busy.push((performance.now() - t) * 1000);
      }
      await done;
    }
    return { wakeIdleUs: median(idle), postBusyUs: median(busy) };
  } finally {
    await w.terminate();
  }
}

export async function measureMachine(seconds = Number(process.env.BENCH_MACHINE_SECONDS ?? 2)): Promise<MachineCosts> {
  const es256SignPerSec = await signRate(seconds);
  return { es256SignPerSec, ...(await handOffCosts(500)) };
}

export function describeMachine(m: MachineCosts): string {
  return (
    `node:crypto ES256 sign ${Math.round(m.es256SignPerSec).toLocaleString('en-US')} ops/s (1 thread); ` +
    `a hand-off to a sleeping thread costs the sender ${m.wakeIdleUs.toFixed(1)} µs, to a running one ${m.postBusyUs.toFixed(1)} µs`
  );
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) console.log(describeMachine(await measureMachine()));
