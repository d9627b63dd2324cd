// The committed migrations (prisma/migrations/<provider>) apply cleanly, are idempotent and produce
// exactly the schema of prisma/generated/<provider>/schema.prisma, on SQLite and PostgreSQL.
import Database from 'better-sqlite3';
import pg from 'pg';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  applyMigrations,
  diffSchemaAgainstDatabase,
  isEmptyMigrationScript,
  providerForUrl,
  readMigrations,
  type DbProvider,
} from '../../src/storage/migrate.js';
import { createTestPostgresDatabase, createTestSqliteUrl } from '../support/databases.js';

interface TestDb {
  url: string;
  drop(): Promise<void>;
  /** Runs SQL directly against the database (outside Prisma). */
  exec(sql: string): Promise<void>;
  /** Rows of `_prisma_migrations` (applied ones only). */
  appliedMigrations(): Promise<string[]>;
}

const APPLIED_SQL =
  'SELECT migration_name FROM _prisma_migrations WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name';

async function sqliteDb(): Promise<TestDb> {
  const s = createTestSqliteUrl('agsts-migrations');
  const withDb = <T>(fn: (db: Database.Database) => T): T => {
    const db = new Database(s.path);
    try {
      return fn(db);
    } finally {
      db.close();
    }
  };
  return {
    url: s.url,
    drop: s.drop,
    exec: async (sql) => withDb((db) => void db.exec(sql)),
    appliedMigrations: async () =>
      withDb((db) => (db.prepare(APPLIED_SQL).all() as { migration_name: string }[]).map((r) => r.migration_name)),
  };
}

async function postgresDb(): Promise<TestDb> {
  const d = await createTestPostgresDatabase('agsts_migrations');
  const withDb = async <T>(fn: (c: pg.Client) => Promise<T>): Promise<T> => {
    const c = new pg.Client({ connectionString: d.url });
    await c.connect();
    try {
      return await fn(c);
    } finally {
      await c.end();
    }
  };
  return {
    url: d.url,
    drop: d.drop,
    exec: (sql) => withDb(async (c) => void (await c.query(sql))),
    appliedMigrations: () =>
      withDb(async (c) => (await c.query<{ migration_name: string }>(APPLIED_SQL)).rows.map((r) => r.migration_name)),
  };
}

const cases: [DbProvider, () => Promise<TestDb>][] = [
  ['sqlite', sqliteDb],
  ['postgresql', postgresDb],
];

describe.each(cases)('migrations on %s', (provider, makeDb) => {
  let db: TestDb;
  let names: string[];

  beforeAll(async () => {
    db = await makeDb();
    names = (await readMigrations(provider)).migrationDirectories.map((d) => d.path);
  });
  afterAll(async () => {
    await db?.drop();
  });

  it('has an init migration and a lock file for the provider', async () => {
    const list = await readMigrations(provider);
    expect(names.length).toBeGreaterThan(0);
    expect(names[0]).toMatch(/^\d{14}_init$/);
    expect(list.lockfile.content).toContain(`provider = "${provider}"`);
    for (const d of list.migrationDirectories) expect(d.migrationFile.content.tag).toBe('ok');
  });

  it('applies every migration to a fresh database', async () => {
    const progress: string[] = [];
    const { applied } = await applyMigrations(db.url, { onProgress: (m) => progress.push(m) });
    expect(applied).toEqual(names);
    expect(progress.length).toBeGreaterThan(0);
    expect(await db.appliedMigrations()).toEqual(names);
  });

  it('applies nothing the second time', async () => {
    expect(await applyMigrations(db.url)).toEqual({ applied: [] });
    expect(await db.appliedMigrations()).toEqual(names);
  });

  it('leaves the database exactly at the generated schema', async () => {
    const sql = await diffSchemaAgainstDatabase(db.url);
    expect(isEmptyMigrationScript(sql), `unexpected drift:\n${sql}`).toBe(true);
  });

  it('notices drift (the check above can fail)', async () => {
    await db.exec('DROP TABLE "AuditChainHead"');
    const sql = await diffSchemaAgainstDatabase(db.url);
    expect(isEmptyMigrationScript(sql)).toBe(false);
    expect(sql).toMatch(/CREATE TABLE "AuditChainHead"/);
  });
});

describe('migration helpers', () => {
  it('providerForUrl accepts postgres and file URLs, and never echoes a password', () => {
    expect(providerForUrl('postgres://u:p@h:5432/db')).toBe('postgresql');
    expect(providerForUrl('postgresql://u@h/db')).toBe('postgresql');
    expect(providerForUrl('file:./data/agent-sts.db')).toBe('sqlite');
    expect(() => providerForUrl('mysql://root:hunter2@h/db')).toThrow(/postgres:\/\/.*file:/);
    expect(() => providerForUrl('mysql://root:hunter2@h/db')).toThrow(/mysql:\/\/root:\*\*\*@h\/db/);
    try {
      providerForUrl('mysql://root:hunter2@h/db');
    } catch (err) {
      expect(String(err)).not.toContain('hunter2');
    }
  });

  it('isEmptyMigrationScript ignores comments and blank lines only', () => {
    expect(isEmptyMigrationScript('-- This is an empty migration.\n')).toBe(true);
    expect(isEmptyMigrationScript('')).toBe(true);
    expect(isEmptyMigrationScript('-- x\nDROP TABLE "T";\n')).toBe(false);
  });
});
