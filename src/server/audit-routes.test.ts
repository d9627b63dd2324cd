// The export stream's backpressure: a consumer that stops reading stops the paging (the next page
// is fetched only once the previous one was taken), and a failure mid-stream ends the stream with
// an error instead of a silently short export.
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, expect, it } from 'vitest';
import { ndjsonStream } from './audit-routes.js';

const chunk = 'x'.repeat(64 * 1024);

describe('ndjsonStream', () => {
  it('pulls the next page only when the consumer has taken the previous one', async () => {
    let pulled = 0;
    async function* pages() {
      for (let i = 0; i < 100; i++) {
        pulled++;
        yield chunk;
      }
    }
    let release!: () => void;
    const stalled = new Promise<void>((r) => (release = r));
    let taken = 0;
    const slow = new Writable({
      highWaterMark: 1,
      write(_c, _e, cb) {
        taken++;
        if (taken === 1) void stalled.then(() => cb());
        else cb();
      },
    });
    const done = pipeline(ndjsonStream(pages(), () => {}), slow);
    await new Promise((r) => setTimeout(r, 100));
    // The consumer holds page 1: at most a couple more were read ahead, not the 100.
    expect(pulled).toBeLessThanOrEqual(4);
    release();
    await done;
    expect(pulled).toBe(100);
    expect(taken).toBe(100);
  });

  it('a failure mid-stream errors the stream (the response is cut off, never silently short)', async () => {
    async function* pages() {
      yield chunk;
      throw new Error('database went away');
    }
    const errors: unknown[] = [];
    const sink = new Writable({ write: (_c, _e, cb) => cb() });
    await expect(pipeline(ndjsonStream(pages(), (e) => errors.push(e)), sink)).rejects.toThrow('database went away');
    expect(errors).toHaveLength(1);
  });
});
