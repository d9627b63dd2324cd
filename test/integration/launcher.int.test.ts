import { spawnSync } from 'node:child_process';
import { copyFileSync, mkdirSync, mkdtempSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterEach, describe, expect, it } from 'vitest';
import { buildFreshness } from '../../bin/build-freshness.js';
import { nodeVersionProblem } from '../../bin/node-version.js';

const BIN = fileURLToPath(new URL('../../bin/', import.meta.url));

/**
 * A project tree with the real launcher (bin/) and a stand-in compiled CLI that prints what it
 * was given, so the launcher's checks run exactly as in a checkout.
 */
function project(opts: { dist: boolean; src: boolean }): string {
  const root = mkdtempSync(join(tmpdir(), 'agent-sts-launcher-'));
  mkdirSync(join(root, 'bin'));
  for (const f of ['agent-sts.js', 'build-freshness.js', 'node-version.js']) copyFileSync(join(BIN, f), join(root, 'bin', f));
  writeFileSync(join(root, 'package.json'), '{"type":"module"}');
  if (opts.dist) {
    mkdirSync(join(root, 'dist', 'cli'), { recursive: true });
    writeFileSync(join(root, 'dist', 'cli', 'main.js'), 'export async function runCli(argv) { console.log(`ran ${argv.slice(2).join(" ")}`); }\n');
  }
  if (opts.src) {
    mkdirSync(join(root, 'src', 'cli'), { recursive: true });
    writeFileSync(join(root, 'src', 'cli', 'main.ts'), 'export {};\n');
    writeFileSync(join(root, 'src', 'cli', 'main.test.ts'), 'export {};\n');
  }
  return root;
}

/** Sets a file's mtime to `secondsAgo` in the past. */
const age = (file: string, secondsAgo: number) => {
  const t = new Date(Date.now() - secondsAgo * 1000);
  utimesSync(file, t, t);
};

const run = (root: string, ...args: string[]) => spawnSync(process.execPath, [join(root, 'bin', 'agent-sts.js'), ...args], { encoding: 'utf8' });

describe('the agent-sts launcher and a stale build', () => {
  const roots: string[] = [];
  const make = (opts: { dist: boolean; src: boolean }) => {
    const r = project(opts);
    roots.push(r);
    return r;
  };
  afterEach(() => {
    for (const r of roots.splice(0)) rmSync(r, { recursive: true, force: true });
  });

  it('buildFreshness: missing without dist/, stale when a source file is newer, fresh otherwise; test files and a tree without src/ do not count', () => {
    expect(buildFreshness(make({ dist: false, src: true }))).toBe('missing');

    const root = make({ dist: true, src: true });
    age(join(root, 'src', 'cli', 'main.ts'), 120);
    age(join(root, 'dist', 'cli', 'main.js'), 60);
    age(join(root, 'src', 'cli', 'main.test.ts'), 0); // a test edited after the build: not part of dist/
    expect(buildFreshness(root)).toBe('fresh');
    age(join(root, 'src', 'cli', 'main.ts'), 0); // e.g. `git pull`
    expect(buildFreshness(root)).toBe('stale');

    expect(buildFreshness(make({ dist: true, src: false }))).toBe('fresh'); // installed package, container image
  });

  it('runs a fresh build silently, warns on stderr (and still runs) when src/ is newer, and refuses with what to do when dist/ is missing', () => {
    const root = make({ dist: true, src: true });
    age(join(root, 'src', 'cli', 'main.ts'), 120);
    const fresh = run(root, 'config', 'check');
    expect(fresh.status).toBe(0);
    expect(fresh.stdout.trim()).toBe('ran config check');
    expect(fresh.stderr).toBe('');

    age(join(root, 'src', 'cli', 'main.ts'), 0);
    age(join(root, 'dist', 'cli', 'main.js'), 60);
    const stale = run(root, 'serve');
    expect(stale.status).toBe(0);
    expect(stale.stdout.trim()).toBe('ran serve');
    expect(stale.stderr).toMatch(/src\/ has changed since dist\/ was built.*Run `npm run build`/);

    const none = run(make({ dist: false, src: true }), 'serve');
    expect(none.status).toBe(1);
    expect(none.stdout).toBe('');
    expect(none.stderr).toMatch(/dist\/ is missing\. Run `npm install` \(or `npm run build`\)/);
  });
});

describe('the Node.js versions the launcher accepts (package.json engines)', () => {
  it('20.19+ and 22.12+ (require(esm) without a flag) run; older ones are refused with what to do', () => {
    for (const v of ['20.19.0', '20.20.2', 'v20.19.1', '22.12.0', '22.20.1', '23.0.0', '24.1.0']) expect(nodeVersionProblem(v), v).toBeUndefined();
    for (const v of ['20.18.3', '20.0.0', '18.20.4', '21.7.3', '22.11.0', '22.0.0'])
      expect(nodeVersionProblem(v), v).toBe(`agent-sts needs Node.js 20.19 or newer in the 20 line, or 22.12 or newer (this is ${v}); upgrade Node.js.`);
    expect(nodeVersionProblem(process.versions.node)).toBeUndefined();
  });
});

