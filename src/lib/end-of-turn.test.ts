import { describe, expect, it } from 'vitest';
import { atEndOfTurn } from './end-of-turn.js';

describe('atEndOfTurn', () => {
  it('runs after the turn, hand-offs before local work whatever order they were scheduled in, each once', async () => {
    const ran: string[] = [];
    atEndOfTurn('local', () => ran.push('sign 1'));
    atEndOfTurn('handoff', () => ran.push('audit batch'));
    atEndOfTurn('local', () => ran.push('sign 2'));
    atEndOfTurn('handoff', () => ran.push('signing thread'));
    ran.push('turn');
    await new Promise((r) => setImmediate(r));
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['turn', 'audit batch', 'signing thread', 'sign 1', 'sign 2']);
  });

  it('work scheduled while the queue runs goes to the next round', async () => {
    const ran: string[] = [];
    atEndOfTurn('handoff', () => {
      ran.push('first');
      atEndOfTurn('handoff', () => ran.push('later'));
    });
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['first']);
    await new Promise((r) => setImmediate(r));
    expect(ran).toEqual(['first', 'later']);
  });
});

describe('atEndOfTurn when a task throws', () => {
  it('still runs the others, then throws the first error', async () => {
    const ran: string[] = [];
    const errors: unknown[] = [];
    const onError = (e: unknown) => errors.push(e);
    const listeners = process.listeners('uncaughtException');
    process.removeAllListeners('uncaughtException');
    process.on('uncaughtException', onError);
    try {
      atEndOfTurn('handoff', () => {
        throw new Error('pump failed');
      });
      atEndOfTurn('local', () => ran.push('signed'));
      await new Promise((r) => setImmediate(r));
      await new Promise((r) => setImmediate(r));
    } finally {
      process.removeListener('uncaughtException', onError);
      for (const l of listeners) process.on('uncaughtException', l);
    }
    expect(ran).toEqual(['signed']);
    expect(errors.map((e) => (e as Error).message)).toEqual(['pump failed']);
  });
});
