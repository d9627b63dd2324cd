// The Node.js versions agent-sts runs on (package.json "engines"): 20.19 or newer in the 20 line,
// 22.12 or newer after it. Both load ES-module-only packages with require() (require(esm)), which
// the lazily loaded SDKs rely on (src/lib/lazy-module.ts); older versions fail only when a
// configured provider or issuer is first used, so the launcher refuses them at start. Plain
// JavaScript: the launcher runs before anything is compiled.

/** Why this Node.js version cannot run agent-sts, or undefined when it can. `version`: e.g. "20.19.2". */
export function nodeVersionProblem(version) {
  const [major, minor] = String(version).replace(/^v/, '').split('.').map(Number);
  const ok = (major === 20 && minor >= 19) || (major === 22 && minor >= 12) || major >= 23;
  return ok ? undefined : `agent-sts needs Node.js 20.19 or newer in the 20 line, or 22.12 or newer (this is ${version}); upgrade Node.js.`;
}
