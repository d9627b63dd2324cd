// Loads Prisma's schema engine (WebAssembly) without `node --experimental-wasm-modules`.
//
// The package entry (schema_engine.js) does `import * as wasm from "./schema_engine_bg.wasm"`, which
// only works with that flag. We do what it does by hand: take the JS glue (schema_engine_bg.js, an
// exported subpath), instantiate the .wasm bytes with the glue as its import object, hand the instance
// to the glue and run the start function.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { createRequire } from 'node:module';
import * as glue from '@prisma/schema-engine-wasm/schema_engine_bg';

export type SchemaEngineClass = typeof glue.SchemaEngine;
export type SchemaEngine = glue.SchemaEngine;
export type {
  ApplyMigrationsOutput,
  DiffParams,
  DiffResult,
  DiffTarget,
  MigrationDirectory,
  MigrationList,
  SchemaFilter,
} from '@prisma/schema-engine-wasm/schema_engine_bg';

// The project compiles without the DOM lib and @types/node does not declare WebAssembly, so type
// the little of it we use here.
type WasmImports = Record<string, unknown>;
interface WasmModuleImportDescriptor {
  module: string;
  name: string;
  kind: string;
}
interface WasmApi {
  compile(bytes: Uint8Array): Promise<object>;
  instantiate(module: object, imports: Record<string, WasmImports>): Promise<{ exports: Record<string, unknown> }>;
  Module: { imports(module: object): WasmModuleImportDescriptor[] };
}
const Wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

/** The module name the .wasm imports its host functions from (checked at load time). */
const GLUE_MODULE = './schema_engine_bg.js';

let loading: Promise<SchemaEngineClass> | undefined;

/** Loads and initialises the engine once per process; returns its `SchemaEngine` class. */
export function loadSchemaEngine(): Promise<SchemaEngineClass> {
  loading ??= instantiate().catch((err: unknown) => {
    loading = undefined; // let a later call retry
    throw err;
  });
  return loading;
}

async function instantiate(): Promise<SchemaEngineClass> {
  // The .wasm is not an exported subpath, so resolve the glue and take its directory.
  const require = createRequire(import.meta.url);
  const gluePath = require.resolve('@prisma/schema-engine-wasm/schema_engine_bg');
  const wasmPath = join(dirname(gluePath), 'schema_engine_bg.wasm');
  const bytes = await readFile(wasmPath);
  const module = await Wasm.compile(bytes);

  const importModules = new Set(Wasm.Module.imports(module).map((i) => i.module));
  for (const name of importModules) {
    if (name !== GLUE_MODULE) {
      throw new Error(
        `schema engine: ${wasmPath} imports from unexpected module "${name}" (expected "${GLUE_MODULE}"); ` +
          'the @prisma/schema-engine-wasm layout changed, update src/storage/schema-engine.ts',
      );
    }
  }

  const instance = await Wasm.instantiate(module, { [GLUE_MODULE]: hostImports() });
  const exports = instance.exports;
  glue.__wbg_set_wasm(exports);
  const start = exports['__wbindgen_start'];
  if (typeof start === 'function') (start as () => void)();
  return glue.SchemaEngine;
}

/**
 * The glue's exports, except that the engine's timers are unref'd. The engine arms a setTimeout
 * (10 s, apparently an operation timeout) for database work and never clears it (the glue imports no
 * clearTimeout), so a CLI run would otherwise stay alive ~10 s after it finished. Callers keep the
 * process alive themselves while an engine call is pending (see withEngine in migrate.ts).
 */
function hostImports(): WasmImports {
  const imports: WasmImports = { ...glue };
  const names = Object.keys(imports).filter((k) => k.startsWith('__wbg_setTimeout_'));
  if (names.length === 0) {
    throw new Error('schema engine: the glue has no __wbg_setTimeout_* import; update src/storage/schema-engine.ts');
  }
  for (const name of names) {
    const original = imports[name] as (callback: () => void, ms: number) => unknown;
    imports[name] = (callback: () => void, ms: number): unknown => {
      const timer = original(callback, ms);
      (timer as { unref?: () => void } | null)?.unref?.();
      return timer;
    };
  }
  return imports;
}
