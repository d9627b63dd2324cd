import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

/**
 * A dependency loaded at its first use instead of at start-up. The SDKs of trust providers,
 * issuers and telemetry exporters take most of a process's start (the Kubernetes client alone
 * ~0.5 s), and most deployments configure one or two of them; every CLI command and replica paid
 * for all. `require` is synchronous, so plugin factories stay synchronous: CommonJS packages load
 * as usual, ES-module-only ones (the Kubernetes client, Octokit) through Node's require(esm)
 * (Node >= 20.19, as package.json's engines say), which shares the instance `import` would give.
 * Pass `typeof import(...)` of a type-only import as T.
 */
export function lazyModule<T>(specifier: string): () => T {
  let loaded: T | undefined;
  return () => (loaded ??= load(specifier) as T);
}
