// The postgres issuer keeps a small pool of admin connections to the target database. When the
// database closes one that sits idle (a restart, an administrator's pg_terminate_backend, a
// network drop), pg's pool reports it as an 'error' event: unhandled, that event crashes the whole
// broker. Against the real PostgreSQL: the broker logs it (no secret), and the next call reconnects.
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { postgresPlugin, PostgresIssuerConfigSchema } from '../../src/credential-issuers/postgres/postgres-issuer.js';
import { createLogger } from '../../src/log/logger.js';
import { PG_ADMIN_URL } from '../support/databases.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });

/** A name for the issuer's admin connections only, so this test terminates nothing else on the shared server. */
const APP = `agsts-idle-${randomBytes(6).toString('hex')}`;
const adminUrl = new URL(PG_ADMIN_URL);
adminUrl.searchParams.set('application_name', APP);

const admin = new pg.Client({ connectionString: PG_ADMIN_URL, connectionTimeoutMillis: 5000 });

afterAll(async () => {
  await admin.end().catch(() => {});
});

async function until(what: string, ok: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

describe('postgres issuer: an idle admin connection closed by the database', () => {
  it('is logged without a secret and does not take the broker down; the next call reconnects', async () => {
    const issuer = postgresPlugin.create(
      'idle-pg',
      PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'PG_IDLE' }, roles: { read: 'r' } }),
      testIssuerDeps(logger, { PG_IDLE: adminUrl.href }, 'idle-pg'),
    );
    try {
      expect(await issuer.health!()).toMatchObject({ ok: true }); // leaves one admin connection idle in the pool
      await admin.connect();
      const killed = await admin.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = $1', [APP]);
      expect(killed.rowCount).toBe(1);

      await until('the log line', () => logLines.some((l) => l.includes('idle admin connection')));
      const line = JSON.parse(logLines.find((l) => l.includes('idle admin connection'))!) as Record<string, unknown>;
      expect(line).toMatchObject({ level: 40, issuer: 'idle-pg', code: '57P01' }); // admin_shutdown: terminated by an administrator
      expect(JSON.stringify(line)).not.toContain(adminUrl.host + adminUrl.pathname); // not the connection URL

      expect(await issuer.health!()).toMatchObject({ ok: true });
      const after = await admin.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [APP]);
      expect(after.rows[0].n).toBe(1); // a new connection took the dead one's place
    } finally {
      await issuer.close?.();
    }
  });
});
