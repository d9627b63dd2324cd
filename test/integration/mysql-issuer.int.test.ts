// The `mysql` credential issuer against the real MariaDB/MySQL server: one account per grant with
// exactly the configured privileges (database-level `_` taken literally, not as a wildcard),
// revocation that ends open sessions and is idempotent, user names within MySQL's 32-character
// limit, schema refusals of unsafe grants, UpstreamUnavailable when the server is down, and no
// password in logs or errors.
import { inspect } from 'node:util';
import mysql from 'mysql2/promise';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { mysqlIssuerPlugin, MysqlIssuerConfigSchema, type MysqlHandle, type MysqlIssuerConfig } from '../../src/credential-issuers/mysql/mysql-issuer.js';
import { completed, type CredentialIssuer, type IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { credentialIssuerCatalog } from '../../src/credential-issuers/catalog.js';
import type { BlendedIdentity, CallContext, Credential } from '../../src/core/types.js';
import { UpstreamUnavailable } from '../../src/errors/sts-errors.js';
import { credentialFingerprint, randomLowerId } from '../../src/lib/crypto.js';
import { TOKEN_TYPE } from '../../src/lib/urns.js';
import { createLogger } from '../../src/log/logger.js';
import { createTestMysqlDatabase, MYSQL_URL, type TestMysqlDatabase } from '../support/databases.js';
import { testIssuerDeps } from '../support/issuer-deps.js';

// Every password the issuer generates, so the test can look for it where it must not be.
const generated = vi.hoisted(() => [] as string[]);
vi.mock('../../src/lib/crypto.js', async (importOriginal) => {
  const orig = await importOriginal<typeof import('../../src/lib/crypto.js')>();
  return {
    ...orig,
    randomBase62: (length: number) => {
      const v = orig.randomBase62(length);
      generated.push(v);
      return v;
    },
  };
});

const PREFIX = 'agsmy_';
const ER_TABLEACCESS_DENIED = 1142;

const logLines: string[] = [];
const logger = createLogger({ level: 'trace', destination: { write: (s: string) => void logLines.push(s) } });
const ctx = (): CallContext => ({ requestId: 'test', now: new Date() });

function deps(env: NodeJS.ProcessEnv): IssuerDeps {
  return testIssuerDeps(logger, env);
}

async function admin<T>(fn: (c: mysql.Connection) => Promise<T>): Promise<T> {
  const c = await mysql.createConnection({ uri: MYSQL_URL });
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

async function userExists(user: string): Promise<boolean> {
  return admin(async (c) => ((await c.query<mysql.RowDataPacket[]>('SELECT 1 FROM mysql.user WHERE User = ?', [user]))[0].length > 0));
}

interface Login {
  host: string;
  port: number;
  database: string;
  username: string;
  password: string;
}
const loginOf = (cred: Credential) => cred.structured!.reveal() as unknown as Login;
const connectAs = (l: Login) => mysql.createConnection({ host: l.host, port: l.port, user: l.username, password: l.password, database: l.database, connectTimeout: 5000 });

async function issue(issuer: CredentialIssuer, scopes: string[], over: { taskId?: string; plannedHandle?: MysqlHandle; scopeParams?: Record<string, Record<string, string>> } = {}): Promise<Credential> {
  const taskId = over.taskId ?? `tsk${randomLowerId(16)}`;
  const credentialId = `cred-${randomLowerId(8)}`;
  const plannedHandle = over.plannedHandle ?? issuer.planHandle!({ taskId, credentialId });
  return completed(issuer.issue(
    {
      decision: { allow: true, policyVersion: 'v1', grantedScopes: scopes, ttlCapSeconds: 300, reasons: [], ...(over.scopeParams ? { scopeParams: over.scopeParams } : {}) },
      identity: {} as BlendedIdentity,
      taskId,
      credentialId,
      requestedTarget: 'db',
      ttlSeconds: 300,
      plannedHandle,
    },
    ctx(),
  ));
}

describe('mysql credential issuer (real server)', () => {
  let db: TestMysqlDatabase;
  let sibling: string;
  let role: string;
  let issuer: CredentialIssuer;
  const open: mysql.Connection[] = [];

  beforeAll(async () => {
    db = await createTestMysqlDatabase('agsts_my');
    // Same name with the first `_` replaced: an unescaped `_` in `GRANT ... ON db.*` would match it.
    sibling = db.name.replace('_', 'x');
    role = `${PREFIX}role_${randomLowerId(8)}`;
    await admin(async (c) => {
      const d = mysql.escapeId(db.name);
      await c.query(`CREATE TABLE ${d}.items (id INT PRIMARY KEY, name VARCHAR(40))`);
      await c.query(`CREATE TABLE ${d}.audit (id INT PRIMARY KEY)`);
      await c.query(`INSERT INTO ${d}.items VALUES (1, 'one'), (2, 'two')`);
      await c.query(`CREATE DATABASE ${mysql.escapeId(sibling)}`);
      await c.query(`CREATE TABLE ${mysql.escapeId(sibling)}.items (id INT PRIMARY KEY)`);
      await c.query(`CREATE ROLE ${mysql.escapeId(role)}`);
      await c.query(`GRANT SELECT ON ${d}.items TO ${mysql.escapeId(role)}`);
    });
    const config = MysqlIssuerConfigSchema.parse({
      adminUrl: { fromEnv: 'MYSQL_ADMIN' },
      grants: {
        read: [{ privileges: ['SELECT'], on: `${db.name}.*` }],
        write: [{ privileges: ['INSERT', 'UPDATE'], on: `${db.name}.items` }],
        viaRole: [{ role }],
        broken: [{ privileges: ['SELECT'], on: `${db.name}.no_such_table` }],
      },
      grantableRoles: { write: [role] },
      userPrefix: PREFIX,
      maxConnections: 3,
    });
    issuer = mysqlIssuerPlugin.create('my', config, deps({ MYSQL_ADMIN: db.url }));
  });

  afterAll(async () => {
    for (const c of open) c.destroy();
    await issuer?.close?.();
    await admin(async (c) => {
      const [rows] = await c.query<mysql.RowDataPacket[]>('SELECT User AS u, Host AS h FROM mysql.user WHERE User LIKE ?', [`${PREFIX.replace(/_/g, '\\_')}%`]);
      for (const r of rows) await c.query(`DROP ${r.h === '' ? 'ROLE' : 'USER IF EXISTS'} ${r.h === '' ? mysql.escapeId(r.u) : mysql.format('?@?', [r.u, r.h])}`);
      if (sibling) await c.query(`DROP DATABASE IF EXISTS ${mysql.escapeId(sibling)}`);
    });
    await db?.drop();
  });

  it('is registered in the catalog with its token type and active revocation', () => {
    expect(credentialIssuerCatalog.get('mysql')).toBe(mysqlIssuerPlugin);
    expect(issuer).toMatchObject({ type: 'mysql', name: 'my', issuedTokenTypes: [TOKEN_TYPE.mysqlCredentials], needsActiveRevocation: true });
    expect(TOKEN_TYPE.mysqlCredentials).toBe('urn:agent-sts:token-type:mysql-credentials');
  });

  it('issues a login that can SELECT the granted database and nothing more', async () => {
    const cred = await issue(issuer, ['read']);
    const l = loginOf(cred);
    const password = cred.accessToken.reveal();
    expect(cred).toMatchObject({ issuedTokenType: TOKEN_TYPE.mysqlCredentials, tokenType: 'N_A', fingerprint: credentialFingerprint(password) });
    expect(cred.expiresAt.getTime() - Date.now()).toBeGreaterThan(290_000);
    expect(l).toMatchObject({ host: '127.0.0.1', port: 3306, database: db.name, password, expires_at: cred.expiresAt.toISOString() });
    expect(password).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(cred.revocationHandle).toEqual({ user: l.username, host: '%' });
    expect(l.username.length).toBeLessThanOrEqual(32);
    expect(l.username).toMatch(/^agsmy_[a-z0-9_]+$/);

    const conn = await connectAs(l);
    open.push(conn);
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT id, name FROM items ORDER BY id');
    expect(rows.map((r) => r.name)).toEqual(['one', 'two']);
    await expect(conn.query('INSERT INTO items VALUES (3, ?)', ['three'])).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await expect(conn.query(`SELECT * FROM ${mysql.escapeId(sibling)}.items`)).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await expect(conn.query('SELECT * FROM mysql.user')).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await expect(conn.query('CREATE USER x IDENTIFIED BY ?', ['x'])).rejects.toMatchObject({ code: expect.any(String) });

    const shown = await admin(async (c) => (await c.query<mysql.RowDataPacket[]>(mysql.format('SHOW CREATE USER ?@?', [l.username, '%'])))[0]);
    expect(Object.values(shown[0]!)[0]).toMatch(/MAX_USER_CONNECTIONS 3/);
    // The database-level grant names the database with `_` escaped, i.e. literally.
    const grants = await admin(async (c) => (await c.query<mysql.RowDataPacket[]>(mysql.format('SHOW GRANTS FOR ?@?', [l.username, '%'])))[0]);
    expect(grants.map((g) => Object.values(g)[0]).join('\n')).toContain(`GRANT SELECT ON \`${db.name.replace(/_/g, '\\_')}\`.* TO`);
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it('combines the grants of several scopes, table-level grants stay on their table', async () => {
    const cred = await issue(issuer, ['read', 'write']);
    const conn = await connectAs(loginOf(cred));
    open.push(conn);
    await conn.query('INSERT INTO items VALUES (10, ?)', ['ten']);
    await conn.query('UPDATE items SET name = ? WHERE id = 10', ['TEN']);
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT name FROM items WHERE id = 10');
    expect(rows[0]!.name).toBe('TEN');
    await expect(conn.query('INSERT INTO audit VALUES (1)')).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await expect(conn.query('DELETE FROM items WHERE id = 10')).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it('grants an existing role and makes it the default role', async () => {
    const cred = await issue(issuer, ['viaRole']);
    const conn = await connectAs(loginOf(cred));
    open.push(conn);
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM items');
    expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(2);
    await expect(conn.query('SELECT * FROM audit')).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it("joins the role a grant's role parameter chose (from grantableRoles) instead of the scope's grants", async () => {
    const cred = await issue(issuer, ['write'], { scopeParams: { write: { role } } });
    const conn = await connectAs(loginOf(cred));
    open.push(conn);
    const [rows] = await conn.query<mysql.RowDataPacket[]>('SELECT COUNT(*) AS n FROM items');
    expect(Number(rows[0]!.n)).toBeGreaterThanOrEqual(2);
    // the scope's own grants (INSERT, UPDATE on items) were not given
    await expect(conn.query('INSERT INTO items VALUES (11, ?)', ['eleven'])).rejects.toMatchObject({ errno: ER_TABLEACCESS_DENIED });
    await issuer.revoke(cred.revocationHandle!, ctx());
  });

  it('refuses a role parameter outside grantableRoles before creating anything', async () => {
    const handle = issuer.planHandle!({ taskId: `tsk${randomLowerId(16)}`, credentialId: 'c' }) as MysqlHandle;
    await expect(issue(issuer, ['write'], { plannedHandle: handle, scopeParams: { write: { role: 'root' } } })).rejects.toMatchObject({ name: 'ScopeNotAllowed' });
    expect(await userExists(handle.user)).toBe(false);
  });

  it('revocation kills open sessions, refuses new logins, drops the user and is idempotent', async () => {
    const cred = await issue(issuer, ['read']);
    const l = loginOf(cred);
    const a = await connectAs(l);
    const b = await connectAs(l);
    open.push(a, b);
    await a.query('SELECT 1');
    expect(await userExists(l.username)).toBe(true);

    await issuer.revoke(cred.revocationHandle!, ctx());
    await expect(a.query('SELECT * FROM items')).rejects.toThrow();
    await expect(b.query('SELECT 1')).rejects.toThrow();
    await expect(connectAs(l)).rejects.toMatchObject({ code: expect.stringMatching(/^ER_ACCESS_DENIED/) });
    expect(await userExists(l.username)).toBe(false);

    await expect(issuer.revoke(cred.revocationHandle!, ctx())).resolves.toBeUndefined();
    // A planned handle whose user never got created (crash before issue) revokes cleanly too.
    await expect(issuer.revoke(issuer.planHandle!({ taskId: 'never', credentialId: 'c' }), ctx())).resolves.toBeUndefined();
  });

  it('refuses to revoke a handle that is not one of its users', async () => {
    await expect(issuer.revoke({ user: 'root', host: '127.0.0.1' }, ctx())).rejects.toThrow(/prefix/);
    await expect(issuer.revoke({ user: `${PREFIX}x'; DROP USER root; --`, host: '%' }, ctx())).rejects.toThrow(/prefix/);
    await expect(issuer.revoke({ user: `${PREFIX}abc`, host: "%' OR 1" }, ctx())).rejects.toThrow(/host/);
    expect(await userExists('root')).toBe(true);
  });

  it('keeps user names within 32 characters of [a-z0-9_], whatever the task id and prefix', () => {
    const config = MysqlIssuerConfigSchema.parse({ adminUrl: { insecureValue: MYSQL_URL }, grants: { r: [{ privileges: ['SELECT'], on: 'a.*' }] }, userPrefix: 'abcdefghij' });
    const long = mysqlIssuerPlugin.create('long', config, deps({}));
    for (const taskId of ['0197a2b3-c4d5-7e6f-8a9b-0c1d2e3f4a5b', 'X'.repeat(200), '', 'Ünïcødé/../; DROP', `${'9'.repeat(40)}`]) {
      for (const p of [long, issuer]) {
        const h = p.planHandle!({ taskId, credentialId: 'c' }) as MysqlHandle;
        expect(h.user.length).toBeLessThanOrEqual(32);
        expect(h.user).toMatch(/^[a-z0-9_]+$/);
      }
    }
    const a = issuer.planHandle!({ taskId: 'same', credentialId: 'c' }) as MysqlHandle;
    const b = issuer.planHandle!({ taskId: 'same', credentialId: 'c' }) as MysqlHandle;
    expect(a.user).not.toBe(b.user);
  });

  it('refuses unsafe grant configurations', () => {
    const parse = (grants: unknown, extra: Record<string, unknown> = {}) => MysqlIssuerConfigSchema.safeParse({ adminUrl: { fromEnv: 'X' }, grants: { s: grants }, ...extra });
    expect(parse([{ privileges: ['SELECT', 'SHOW VIEW'], on: 'app_db.*' }]).success).toBe(true);
    expect(parse([{ privileges: ['SELECT'], on: 'app.orders' }]).success).toBe(true);
    for (const privileges of [['ALL'], ['ALL PRIVILEGES'], ['GRANT OPTION'], ['SUPER'], ['FILE'], ['CREATE USER'], ['PROCESS'], ['select'], ['SELECT, INSERT'], ['SELECT ON *.* TO x; --'], []])
      expect(parse([{ privileges, on: 'app.*' }]).success, JSON.stringify(privileges)).toBe(false);
    for (const on of ['*.*', 'app', 'app.*; DROP USER root', '`app`.*', "app.t'x", 'app .*', 'app.*.*', 'mysql.*', 'MySQL.user', 'information_schema.*', 'performance_schema.*', 'sys.*', 'app.t TO x@y', ''])
      expect(parse([{ privileges: ['SELECT'], on }]).success, on).toBe(false);
    for (const r of ["admin'@'%", 'a b', 'r`x', ''])
      expect(parse([{ role: r }]).success, r).toBe(false);
    expect(parse([{ privileges: ['SELECT'], on: 'app.*', withGrantOption: true }]).success).toBe(false);
    expect(parse([{ privileges: ['SELECT'], on: 'app.*', role: 'r' }]).success).toBe(false);
    expect(parse([]).success).toBe(false);
    expect(MysqlIssuerConfigSchema.safeParse({ adminUrl: { fromEnv: 'X' }, grants: {} }).success).toBe(false);
    expect(MysqlIssuerConfigSchema.safeParse({ adminUrl: 'mysql://root:pw@h/', grants: { s: [{ role: 'r' }] } }).success).toBe(false);
    for (const userPrefix of ['Ags_', 'ags-', 'abcdefghijk', '1ags', ''])
      expect(parse([{ role: 'r' }], { userPrefix }).success, userPrefix).toBe(false);
    expect(parse([{ role: 'r' }], { host: "%' IDENTIFIED BY 'x" }).success).toBe(false);
    expect(parse([{ role: 'r' }], { unknown: 1 }).success).toBe(false);
    const d = MysqlIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'X' }, grants: { s: [{ role: 'r' }] } }) as MysqlIssuerConfig;
    expect(d).toMatchObject({ userPrefix: 'ags_', host: '%', maxConnections: 5 });
  });

  it('issuance is all-or-nothing: a failing GRANT drops the new user, and the error carries no password', async () => {
    const before = generated.length;
    const taskId = `tsk${randomLowerId(8)}`;
    const handle = issuer.planHandle!({ taskId, credentialId: 'c' }) as MysqlHandle;
    const err = (await issue(issuer, ['broken'], { taskId, plannedHandle: handle }).catch((e: unknown) => e)) as Error;
    expect(err).toBeInstanceOf(Error);
    expect(err).not.toBeInstanceOf(UpstreamUnavailable);
    expect(await userExists(handle.user)).toBe(false);
    const password = generated[before]!;
    expect(password).toMatch(/^[A-Za-z0-9]{32}$/);
    expect(`${err.message}\n${err.stack}\n${inspect(err, { depth: 10 })}\n${JSON.stringify(err)}`).not.toContain(password);
  });

  it('a failing CREATE USER (the statement with the password) leaks nothing either', async () => {
    const taskId = `tsk${randomLowerId(8)}`;
    const handle = issuer.planHandle!({ taskId, credentialId: 'c' }) as MysqlHandle;
    await admin((c) => c.query(mysql.format('CREATE USER ?@? IDENTIFIED BY ?', [handle.user, handle.host, 'placeholder'])));
    const before = generated.length;
    const err = (await issue(issuer, ['read'], { taskId, plannedHandle: handle }).catch((e: unknown) => e)) as Error & { sql?: string };
    const password = generated[before]!;
    expect(err).toBeInstanceOf(Error);
    expect(err.sql).toBeUndefined();
    expect(`${err.message}\n${err.stack}\n${inspect(err, { depth: 10 })}\n${JSON.stringify(err)}`).not.toContain(password);
    expect(await userExists(handle.user)).toBe(true); // not ours to drop: it existed before
    await issuer.revoke(handle, ctx());
    expect(await userExists(handle.user)).toBe(false);
  });

  it('reports an unreachable server as UpstreamUnavailable, for issue and revoke', async () => {
    const config = MysqlIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'DOWN' }, grants: { read: [{ privileges: ['SELECT'], on: `${db.name}.*` }] }, userPrefix: PREFIX });
    const down = mysqlIssuerPlugin.create('down', config, deps({ DOWN: 'mysql://root:adminpw-not-for-logs@127.0.0.1:1/app' }));
    try {
      const before = generated.length;
      const err = (await issue(down, ['read']).catch((e: unknown) => e)) as UpstreamUnavailable;
      expect(err).toBeInstanceOf(UpstreamUnavailable);
      expect(err).toMatchObject({ status: 503, oauthCode: 'temporarily_unavailable', detail: { issuer: 'down', code: 'ECONNREFUSED' } });
      const text = `${err.message}\n${inspect(err, { depth: 10 })}\n${JSON.stringify(err)}`;
      expect(text).not.toContain(generated[before]!);
      expect(text).not.toContain('adminpw-not-for-logs');
      await expect(down.revoke({ user: `${PREFIX}x_y`, host: '%' }, ctx())).rejects.toBeInstanceOf(UpstreamUnavailable);
    } finally {
      await down.close?.();
    }
  });

  it('never writes a password to the logs', () => {
    expect(generated.length).toBeGreaterThan(3);
    expect(logLines.length).toBeGreaterThan(0); // revocations log at debug
    const all = logLines.join('');
    for (const p of generated) expect(all).not.toContain(p);
  });
});
