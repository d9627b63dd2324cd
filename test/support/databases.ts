// Databases for integration and end-to-end tests. Each test file makes its own, so files can run in
// parallel. The services must be running (scripts/check-services.mjs checks them before `vitest run`).
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import mysql from 'mysql2/promise';
import pg from 'pg';
import { afterAll, beforeAll } from 'vitest';
import { applyMigrations } from '../../src/storage/migrate.js';
import { openDatabase, type Database } from '../../src/storage/prisma-client.js';

export const PG_ADMIN_URL = process.env.AGENT_STS_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres';
export const MYSQL_URL = process.env.AGENT_STS_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/';
export const REDIS_URL = process.env.AGENT_STS_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379';

export interface TestPostgresDatabase {
  /** Connection URL of the new database (same server and credentials as PG_ADMIN_URL). */
  url: string;
  name: string;
  /** Disconnects everyone from the database and drops it. Safe to call more than once. */
  drop(): Promise<void>;
}

export interface TestMysqlDatabase {
  /** Connection URL of the new database (same server and credentials as MYSQL_URL). */
  url: string;
  name: string;
  /** Drops the database. Safe to call more than once. */
  drop(): Promise<void>;
}

export interface TestSqliteDatabase {
  /** `file:` URL of a database file that does not exist yet, in a fresh temp directory. */
  url: string;
  path: string;
  /** Removes the temp directory (database, -wal and -shm files). */
  drop(): Promise<void>;
}

/** A unique lower-case identifier: <prefix>_<timestamp>_<random>, at most 63 characters. */
function uniqueName(prefix: string): string {
  const clean = prefix.toLowerCase().replace(/[^a-z0-9_]/g, '_').replace(/^([^a-z_])/, '_$1');
  const suffix = `_${Date.now()}_${randomBytes(4).toString('hex')}`;
  return `${clean.slice(0, 63 - suffix.length)}${suffix}`;
}

async function withAdmin<T>(fn: (client: pg.Client) => Promise<T>): Promise<T> {
  const client = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });
  await client.connect();
  try {
    return await fn(client);
  } finally {
    await client.end();
  }
}

/** Whether a PostgreSQL role exists (an issued login is gone at the target once revoked). */
export const pgRoleExists = (role: string): Promise<boolean> =>
  withAdmin(async (c) => ((await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role])).rowCount ?? 0) > 0);

/** Drops every role whose name starts with `prefix` (clean-up of the logins a test issued). */
export const dropPgRolesWithPrefix = (prefix: string): Promise<void> =>
  withAdmin(async (c) => {
    const roles = await c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1', [prefix]);
    for (const r of roles.rows) await c.query(`DROP ROLE IF EXISTS ${c.escapeIdentifier(r.rolname)}`);
  });

export async function createTestPostgresDatabase(prefix: string): Promise<TestPostgresDatabase> {
  const name = uniqueName(prefix);
  await withAdmin((c) => c.query(`CREATE DATABASE ${c.escapeIdentifier(name)}`));
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    name,
    drop: () =>
      withAdmin(async (c) => {
        await c.query(
          'SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND pid <> pg_backend_pid()',
          [name],
        );
        await c.query(`DROP DATABASE IF EXISTS ${c.escapeIdentifier(name)} WITH (FORCE)`);
      }),
  };
}

async function withMysqlAdmin<T>(fn: (conn: mysql.Connection) => Promise<T>): Promise<T> {
  const conn = await mysql.createConnection({ uri: MYSQL_URL, connectTimeout: 5000 });
  try {
    return await fn(conn);
  } finally {
    await conn.end();
  }
}

export async function createTestMysqlDatabase(prefix: string): Promise<TestMysqlDatabase> {
  const name = uniqueName(prefix); // <= 63 characters; MySQL allows 64
  await withMysqlAdmin((c) => c.query(`CREATE DATABASE ${mysql.escapeId(name)}`));
  const u = new URL(MYSQL_URL);
  u.pathname = `/${name}`;
  return {
    url: u.toString(),
    name,
    drop: () => withMysqlAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${mysql.escapeId(name)}`)).then(() => undefined),
  };
}

export function createTestSqliteUrl(prefix: string): TestSqliteDatabase {
  const dir = mkdtempSync(join(tmpdir(), `${prefix.replace(/[^A-Za-z0-9_.-]/g, '_')}-`));
  const path = join(dir, 'agent-sts.db');
  return {
    url: `file:${path}`,
    path,
    drop: async () => rmSync(dir, { recursive: true, force: true }),
  };
}

/**
 * For a describe block: creates a store before its tests, applies the committed migrations, opens
 * it, and closes and drops it afterwards. Returns a getter (the database exists once beforeAll ran).
 */
export function useMigratedDatabase(create: () => Promise<{ url: string; drop(): Promise<void> }> | { url: string; drop(): Promise<void> }): () => Database {
  let store: { url: string; drop(): Promise<void> } | undefined;
  let database: Database | undefined;
  beforeAll(async () => {
    store = await create();
    await applyMigrations(store.url);
    database = await openDatabase(store.url);
  });
  afterAll(async () => {
    await database?.close();
    await store?.drop();
  });
  return () => {
    if (!database) throw new Error('the database is opened in beforeAll');
    return database;
  };
}
