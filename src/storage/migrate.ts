// Database migrations without the Prisma CLI: the schema engine runs as WebAssembly
// (src/storage/schema-engine.ts) and talks to the database through Prisma's driver adapters.
//
// Layout (one migration history per dialect, both generated from prisma/models.prisma):
//   prisma/generated/<provider>/schema.prisma          written by scripts/prisma-variants.mjs
//   prisma/migrations/<provider>/migration_lock.toml
//   prisma/migrations/<provider>/<timestamp>_<name>/migration.sql   written by scripts/migrate-diff.ts
import { mkdirSync } from 'node:fs';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import pg from 'pg';
import { PrismaBetterSqlite3 } from '@prisma/adapter-better-sqlite3';
import { PrismaPg } from '@prisma/adapter-pg';
import {
  bindMigrationAwareSqlAdapterFactory,
  type ErrorCapturingSqlMigrationAwareDriverAdapterFactory,
  type SqlDriverAdapter,
  type SqlMigrationAwareDriverAdapterFactory,
} from '@prisma/driver-adapter-utils';
import { loadSchemaEngine, type MigrationList, type SchemaEngine, type SchemaFilter } from './schema-engine.js';

export type DbProvider = 'sqlite' | 'postgresql';

/**
 * The project root. This file lives at src/storage/migrate.ts (tsx, vitest) or
 * dist/storage/migrate.js (compiled), so the root is two levels up either way.
 */
export const PROJECT_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** prisma/migrations/<provider> */
export function migrationsDirectory(provider: DbProvider): string {
  return join(PROJECT_ROOT, 'prisma', 'migrations', provider);
}

/** prisma/generated/<provider>/schema.prisma (written by `npm run generate`). */
export function generatedSchemaPath(provider: DbProvider): string {
  return join(PROJECT_ROOT, 'prisma', 'generated', provider, 'schema.prisma');
}

const ACCEPTED_URLS =
  'postgres://user:password@host:5432/database (or postgresql://...) for PostgreSQL, ' +
  'file:./path/to/agent-sts.db (or file:/absolute/path.db) for SQLite';

/** Returns the URL with any password replaced by `***` (for messages and logs). */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) {
      u.password = '***';
      return u.toString();
    }
    return url;
  } catch {
    // Not parseable as a URL: blank out anything between "//user:" and "@" by hand.
    return url.replace(/(\/\/[^/@:]*):[^/@]*@/, '$1:***@');
  }
}

export function providerForUrl(url: string): DbProvider {
  if (/^postgres(ql)?:\/\//i.test(url)) return 'postgresql';
  if (/^file:/i.test(url)) return 'sqlite';
  throw new Error(`Unsupported database URL "${redactUrl(url)}". Accepted forms: ${ACCEPTED_URLS}.`);
}

/**
 * The SQLite file for a `file:` URL, exactly as @prisma/adapter-better-sqlite3 derives it
 * (it strips the `file:` prefix; a relative path is relative to the process's working directory).
 */
export function sqlitePathForUrl(url: string): string {
  return url.replace(/^file:/i, '');
}

/** The Prisma driver adapter factory for a database URL (used by the Prisma client and the schema engine). */
export function createAdapterFactory(url: string): SqlMigrationAwareDriverAdapterFactory {
  return providerForUrl(url) === 'sqlite'
    ? new PrismaBetterSqlite3({ url })
    : new PrismaPg({ connectionString: url });
}

/**
 * pg client used for the schema engine's connections. @prisma/adapter-pg 7.10 maps result columns
 * by type OID and rejects PostgreSQL's internal one-byte `"char"` type (OID 18), which the engine's
 * catalog queries return (pg_constraint.contype, confdeltype, ...): introspection then fails with
 * "Column type 'char' could not be deserialized from the database". pg already returns those values
 * as strings, so we relabel the column as `text` (OID 25) before the adapter sees it.
 */
const PG_CHAR_OID = 18;
const PG_TEXT_OID = 25;

function relabelCharColumns(result: unknown): unknown {
  for (const r of Array.isArray(result) ? result : [result]) {
    const fields = (r as { fields?: { dataTypeID: number }[] } | null)?.fields;
    if (!Array.isArray(fields)) continue;
    for (const f of fields) if (f.dataTypeID === PG_CHAR_OID) f.dataTypeID = PG_TEXT_OID;
  }
  return result;
}

class CharAsTextClient extends pg.Client {
  constructor(config?: string | pg.ClientConfig) {
    super(config);
    const query = pg.Client.prototype.query.bind(this) as (...args: unknown[]) => unknown;
    (this as unknown as { query: unknown }).query = (...args: unknown[]): unknown => {
      const last = args[args.length - 1];
      if (typeof last === 'function') {
        const cb = last as (err: unknown, res: unknown) => void;
        args[args.length - 1] = (err: unknown, res: unknown) => cb(err, err ? res : relabelCharColumns(res));
        return query(...args);
      }
      const ret = query(...args);
      return ret instanceof Promise ? ret.then(relabelCharColumns) : ret;
    };
  }
}

function engineAdapterFactory(url: string): SqlMigrationAwareDriverAdapterFactory {
  return providerForUrl(url) === 'sqlite'
    ? new PrismaBetterSqlite3({ url })
    : new PrismaPg({ connectionString: url, Client: CharAsTextClient } as pg.PoolConfig);
}

const NO_FILTER: SchemaFilter = { externalTables: [], externalEnums: [] };
const LOCKFILE = 'migration_lock.toml';
const MIGRATION_FILE = 'migration.sql';

/** Reads prisma/migrations/<provider> into the engine's MigrationList shape (directories sorted by name). */
export async function readMigrations(provider: DbProvider): Promise<MigrationList> {
  const baseDir = migrationsDirectory(provider);
  const lockContent = await readFile(join(baseDir, LOCKFILE), 'utf8').catch(() => null);
  let entries: import('node:fs').Dirent[] = [];
  try {
    entries = await readdir(baseDir, { withFileTypes: true });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  const names = entries
    .filter((e) => e.isDirectory())
    .map((e) => e.name)
    .sort();
  const migrationDirectories: MigrationList['migrationDirectories'] = [];
  for (const name of names) {
    const content = await readFile(join(baseDir, name, MIGRATION_FILE), 'utf8').then(
      (value) => ({ tag: 'ok' as const, value }),
      (err: unknown) => ({ tag: 'error' as const, value: err instanceof Error ? err.message : String(err) }),
    );
    migrationDirectories.push({ path: name, migrationFile: { path: MIGRATION_FILE, content } });
  }
  return {
    baseDir,
    lockfile: { path: LOCKFILE, content: lockContent },
    shadowDbInitScript: '',
    migrationDirectories,
  };
}

/**
 * Runs `fn` with a schema engine connected to `url`, then frees the engine and closes every
 * connection it opened (the engine does not close adapter connections itself).
 */
async function withEngine<T>(
  url: string,
  datamodel: { path: string; content: string } | undefined,
  fn: (engine: SchemaEngine) => Promise<T>,
): Promise<T> {
  const SchemaEngineClass = await loadSchemaEngine();
  const factory = engineAdapterFactory(url);
  const opened: SqlDriverAdapter[] = [];
  const disposed = new WeakSet<SqlDriverAdapter>();
  const track = (adapter: SqlDriverAdapter): SqlDriverAdapter => {
    opened.push(adapter);
    const dispose = adapter.dispose.bind(adapter);
    adapter.dispose = async () => {
      if (disposed.has(adapter)) return;
      disposed.add(adapter);
      await dispose();
    };
    return adapter;
  };
  const tracking: SqlMigrationAwareDriverAdapterFactory = {
    provider: factory.provider,
    adapterName: factory.adapterName,
    connect: async () => track(await factory.connect()),
    connectToShadowDb: async () => track(await factory.connectToShadowDb()),
  };
  const bound = bindMigrationAwareSqlAdapterFactory(tracking);
  const closeAll = async (): Promise<void> => {
    const results = await Promise.allSettled(opened.map((a) => a.dispose()));
    const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed) throw failed.reason;
  };
  const run = async (): Promise<T> => {
    let engine: SchemaEngine;
    try {
      engine = await SchemaEngineClass.new(
        { datamodels: datamodel ? [[datamodel.path, datamodel.content]] : undefined },
        () => {}, // engine log lines (JSON); nothing we need
        bound,
      );
    } catch (err) {
      throw explainEngineError(err, bound, url);
    }
    try {
      return await fn(engine);
    } catch (err) {
      throw explainEngineError(err, bound, url);
    } finally {
      engine.free();
    }
  };
  // The engine's own timers are unref'd (schema-engine.ts); this keeps the process alive while it works.
  const keepAlive = setInterval(() => {}, 60_000);
  let result: T;
  try {
    result = await run();
  } catch (err) {
    clearInterval(keepAlive);
    await closeAll().catch(() => {}); // the engine's error is the one worth reporting
    throw err;
  }
  clearInterval(keepAlive);
  await closeAll();
  return result;
}

/**
 * Engine errors coming from the driver only say "External error id#N"; the driver's own error sits
 * in the adapter's error registry. Append it, and never leak a password.
 */
function explainEngineError(
  err: unknown,
  bound: ErrorCapturingSqlMigrationAwareDriverAdapterFactory,
  url: string,
): Error {
  const e = err instanceof Error ? err : new Error(String(err));
  const ids = [...e.message.matchAll(/External error id#(\d+)/g)].map((m) => Number(m[1]));
  const causes = ids
    .map((id) => bound.errorRegistry.consumeError(id)?.error)
    .filter((c) => c !== undefined)
    .map((c) => (c instanceof Error ? c.message : JSON.stringify(c)));
  const password = safePassword(url);
  const scrub = (s: string) => (password ? s.split(password).join('***') : s);
  const message = scrub(
    `${e.message.split('\n')[0] ?? ''}${causes.length ? ` (driver error: ${causes.join('; ')})` : ''}`,
  );
  const out = new Error(`Schema engine failed on ${redactUrl(url)}: ${message}`, { cause: e });
  const code = (e as { code?: unknown }).code;
  if (code !== undefined) (out as Error & { code?: unknown }).code = code;
  return out;
}

function safePassword(url: string): string | undefined {
  try {
    const p = new URL(url).password;
    return p ? decodeURIComponent(p) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Applies the provider's pending migrations to the database at `url` (idempotent: applied migrations
 * are recorded in `_prisma_migrations`). Returns the names of the migrations applied by this call.
 */
export async function applyMigrations(
  url: string,
  opts: { onProgress?: (msg: string) => void } = {},
): Promise<{ applied: string[] }> {
  const say = opts.onProgress ?? (() => {});
  const provider = providerForUrl(url);
  const migrationsList = await readMigrations(provider);
  if (migrationsList.migrationDirectories.length === 0) {
    throw new Error(`No migrations found in ${migrationsList.baseDir}; the installation is incomplete.`);
  }
  if (provider === 'sqlite') {
    const file = sqlitePathForUrl(url);
    if (file !== ':memory:' && file !== '') mkdirSync(dirname(resolve(file)), { recursive: true });
  }
  say(
    `migrate: checking ${migrationsList.migrationDirectories.length} ${provider} migration(s) against ${redactUrl(url)}`,
  );
  // A replica starting beside running ones finds everything applied: it reads that with a plain
  // query and leaves the schema engine (which wants the SQLite file to itself) alone.
  const done = await appliedMigrationNames(url);
  if (migrationsList.migrationDirectories.every((d) => done.has(d.path))) {
    say('migrate: database is up to date');
    return { applied: [] };
  }
  const { appliedMigrationNames: appliedNow } = await withEngine(url, undefined, (engine) =>
    engine.applyMigrations({ migrationsList, filters: NO_FILTER }),
  );
  say(appliedNow.length ? `migrate: applied ${appliedNow.join(', ')}` : 'migrate: database is up to date');
  return { applied: appliedNow };
}

/** Names of the migrations recorded as finished in `_prisma_migrations` (empty when there is no such table yet). */
async function appliedMigrationNames(url: string): Promise<Set<string>> {
  const adapter = await createAdapterFactory(url).connect();
  try {
    const rs = await adapter.queryRaw({
      sql: 'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL',
      args: [],
      argTypes: [],
    });
    return new Set(rs.rows.map((r) => String(r[0])));
  } catch {
    return new Set(); // no table yet (a new database): the engine creates it
  } finally {
    await adapter.dispose();
  }
}

/**
 * The SQL script that would bring the database at `url` to the datamodel of
 * prisma/generated/<provider>/schema.prisma. Empty or comment-only (see isEmptyMigrationScript)
 * when they match. Requires `npm run generate` (or scripts/prisma-variants.mjs) to have run.
 */
export async function diffSchemaAgainstDatabase(url: string): Promise<string> {
  const provider = providerForUrl(url);
  const path = generatedSchemaPath(provider);
  const content = await readFile(path, 'utf8').catch((err: unknown) => {
    throw new Error(`Cannot read ${path} (run \`npm run generate\` first): ${String(err)}`);
  });
  const files = [{ path, content }];
  const result = await withEngine(url, { path, content }, (engine) =>
    engine.diff({
      from: { tag: 'schemaDatasource', files, configDir: dirname(path) },
      to: { tag: 'schemaDatamodel', files },
      script: true,
      exitCode: null,
      filters: NO_FILTER,
    }),
  );
  return result.stdout ?? '';
}

/** True when a migration script has no statements (only blank lines and `--` comments). */
export function isEmptyMigrationScript(sql: string): boolean {
  return sql
    .split('\n')
    .map((l) => l.trim())
    .every((l) => l === '' || l.startsWith('--'));
}
