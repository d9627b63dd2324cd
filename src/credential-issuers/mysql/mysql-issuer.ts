import type * as Mysql from 'mysql2/promise';
import { z } from 'zod';
import { publicEndpointFields } from '../database-fields.js';
import { Secret } from '../../core/secret.js';
import { credentialFingerprint, randomBase62, randomLowerId } from '../../lib/crypto.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema } from '../../config/secret-ref.js';
import { UpstreamUnavailable } from '../../errors/sts-errors.js';
import { UNBOUNDED_TTL_SECONDS, type CredentialIssuer, type CredentialIssuerPlugin, type GrantRequirements, type IssuerCapabilities } from '../credential-issuer.js';
import { grantOfDecision, paramsOf, refuseGrantProblems } from '../grant-params.js';
import { grantableRolesNeedDefaults, sqlRoleParamProblems } from '../sql-role-param.js';
import { adminConnectionHealth, HEALTH_TIMEOUT_MS, networkDetail, safeCode } from '../health.js';
import { lazyModule } from '../../lib/lazy-module.js';

// mysql2 loads when a mysql issuer first connects, not at every start-up.
const mysql2 = lazyModule<typeof Mysql>('mysql2/promise');

/** MySQL ≥ 5.7.8 allows 32 characters in a user name; MariaDB more. We stay within 32 (STANDARDS §7.2). */
export const MYSQL_MAX_USER_LENGTH = 32;
const RANDOM_SUFFIX_LENGTH = 10;

/**
 * Privileges a configuration may grant: object-level data and schema privileges only. Global or
 * administrative ones (ALL, GRANT OPTION, SUPER, FILE, PROCESS, CREATE USER, RELOAD, SHUTDOWN, ...)
 * are deliberately absent: an agent's login must never be able to widen its own or others' rights.
 */
export const MYSQL_GRANTABLE_PRIVILEGES = [
  'SELECT',
  'INSERT',
  'UPDATE',
  'DELETE',
  'CREATE',
  'DROP',
  'ALTER',
  'INDEX',
  'REFERENCES',
  'CREATE VIEW',
  'SHOW VIEW',
  'CREATE TEMPORARY TABLES',
  'LOCK TABLES',
  'EXECUTE',
  'CREATE ROUTINE',
  'ALTER ROUTINE',
  'TRIGGER',
  'EVENT',
] as const;

/** Schemas no grant may target: the grant tables (password hashes) and the server's own schemas. */
const SYSTEM_SCHEMAS = new Set(['mysql', 'information_schema', 'performance_schema', 'sys']);

const objectName = '[A-Za-z0-9_$]{1,64}';
const GrantOnSchema = z
  .string()
  .regex(new RegExp(`^${objectName}\\.(\\*|${objectName})$`), '`db.*` or `db.table`, identifier characters [A-Za-z0-9_$] only')
  .refine((on) => !SYSTEM_SCHEMAS.has(on.split('.')[0]!.toLowerCase()), 'grants on the system schemas (mysql, information_schema, performance_schema, sys) are not allowed');

const PrivilegeGrantSchema = z
  .object({
    privileges: z.array(z.enum(MYSQL_GRANTABLE_PRIVILEGES)).min(1),
    /** `db.*` (every table of a database) or `db.table`; never `*.*`. */
    on: GrantOnSchema,
  })
  .strict();

const RoleName = z.string().regex(/^[A-Za-z0-9_]{1,32}$/, 'a role name of identifier characters [A-Za-z0-9_] only');

const RoleGrantSchema = z
  .object({
    /** An existing role (MySQL 8 / MariaDB ≥ 10.0.5), made the login's default role. */
    role: RoleName,
  })
  .strict();

const GrantSchema = z.union([PrivilegeGrantSchema, RoleGrantSchema]);
export type MysqlGrant = z.infer<typeof GrantSchema>;

export const MysqlIssuerConfigSchema = z
  .object({
    /**
     * Admin connection, a reference, never inline: a login with CREATE USER, GRANT OPTION on what
     * it grants (or the roles, WITH ADMIN OPTION), PROCESS (to see other users' sessions) and
     * CONNECTION_ADMIN / SUPER (MySQL) or CONNECTION ADMIN / SUPER (MariaDB) for KILL.
     */
    adminUrl: SecretRefSchema,
    /** scope -> what a login granted that scope receives. */
    grants: z
      .record(z.string().min(1), z.array(GrantSchema).min(1))
      .refine((g) => Object.keys(g).length > 0, 'map at least one scope to grants'),
    /**
     * scope -> roles a policy grant may choose for it with the scope parameter `role`
     * (`{ name: write, params: { role: ledger_writer } }`): the login then joins that role instead
     * of receiving the scope's `grants`. The allow-list: a policy can never name a role not here (or
     * not a role grant of the scope).
     */
    grantableRoles: z.record(z.string().min(1), z.array(RoleName).min(1)).default({}),
    /** Prefix of generated user names; sweeps recognise agent-sts's accounts by it. */
    userPrefix: z.string().regex(/^[a-z][a-z0-9_]{0,9}$/, 'lower-case, [a-z][a-z0-9_]*, at most 10 characters').default('ags_'),
    /** Host part of the account (`'user'@'host'`): `%` = any host, or a name, address or netmask pattern. */
    host: z.string().regex(/^[A-Za-z0-9.%_:/-]{1,255}$/, 'a host pattern ([A-Za-z0-9.%_:/-])').default('%'),
    /** MAX_USER_CONNECTIONS of each login. */
    maxConnections: z.number().int().min(1).max(1000).default(5),
    /** Bound of each admin connection attempt (greeting and login included) and of each statement, milliseconds. */
    timeoutMs: z.number().int().min(100).max(60_000).default(5000),
    ...publicEndpointFields,
  })
  .strict()
  .superRefine(grantableRolesNeedDefaults('grants', 'grants'));
export type MysqlIssuerConfig = z.infer<typeof MysqlIssuerConfigSchema>;

/** Roles a grant's `role` parameter may choose for `scope`: its grantableRoles and the role grants of its default. */
function grantableRolesOf(config: MysqlIssuerConfig, scope: string): string[] {
  if (!Object.hasOwn(config.grants, scope)) return [];
  const own = config.grants[scope]!.flatMap((g) => ('role' in g ? [g.role] : []));
  return [...new Set([...own, ...(Object.hasOwn(config.grantableRoles, scope) ? config.grantableRoles[scope]! : [])])];
}

/** A grant for a mysql target: only the `role` parameter, one of grantableRolesOf(scope); no session tags. */
export function checkMysqlGrant(config: MysqlIssuerConfig, grant: GrantRequirements): string[] {
  return sqlRoleParamProblems('mysql', grant, (scope) => grantableRolesOf(config, scope));
}

/** What a login granted `scope` receives: the chosen role, or the scope's grants. */
const grantsOf = (config: MysqlIssuerConfig, scope: string, params: Readonly<Record<string, string>>): MysqlGrant[] =>
  params.role !== undefined ? [{ role: params.role }] : Object.hasOwn(config.grants, scope) ? config.grants[scope]! : [];

export interface MysqlHandle {
  user: string;
  host: string;
  [key: string]: unknown;
}

/** Network-level failures: the server is down or unreachable, not a bug. */
function isConnectivityError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return [
    'ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', 'EPIPE',
    'PROTOCOL_CONNECTION_LOST', 'PROTOCOL_SEQUENCE_TIMEOUT', 'ER_CON_COUNT_ERROR', 'ER_SERVER_SHUTDOWN', 'ER_SERVER_GONE_ERROR',
  ].includes(code);
}

/**
 * mysql2 errors carry the statement text (`sql`), which for CREATE USER contains the password.
 * Returns an error with the same code/errno/sqlState and message, minus the statement and the secrets.
 */
function scrubbed(e: unknown, secrets: readonly string[]): Error {
  const src = e as { message?: string; code?: string; errno?: number; sqlState?: string; sqlMessage?: string };
  const clean = (s: string | undefined) => secrets.reduce((acc, x) => (x ? acc.split(x).join('[redacted]') : acc), s ?? '');
  const out = new Error(clean(src.message) || 'mysql error') as Error & Record<string, unknown>;
  out.name = 'MysqlError';
  if (src.code !== undefined) out.code = src.code;
  if (src.errno !== undefined) out.errno = src.errno;
  if (src.sqlState !== undefined) out.sqlState = src.sqlState;
  return out;
}

/**
 * Revocable: the account is locked, its sessions killed and the user dropped. No upstream bound on
 * the lifetime: MySQL accounts have no expiry, so the sweep's revoke() at expiry is the bound.
 */
const CAPABILITIES: IssuerCapabilities = Object.freeze({ revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS, recordsBeforeIssue: true });

/** What a failed admin connection means, from error codes only (server messages are not repeated). */
function healthDetail(e: unknown): string {
  const code = safeCode(e);
  const net = networkDetail(code, 'admin');
  if (net) return net;
  switch (code) {
    case 'ER_ACCESS_DENIED_ERROR':
    case 'ER_ACCESS_DENIED_NO_PASSWORD_ERROR':
      return `admin login rejected (${code})`;
    case 'ER_BAD_DB_ERROR':
      return 'the admin database does not exist (ER_BAD_DB_ERROR)';
    case 'ER_CON_COUNT_ERROR':
    case 'ER_TOO_MANY_USER_CONNECTIONS':
      return `the server has no connection slots left (${code})`;
    case 'ER_HOST_NOT_PRIVILEGED':
    case 'ER_HOST_IS_BLOCKED':
      return `the server refuses connections from this host (${code})`;
    case 'ERR_INVALID_URL':
      return 'the admin URL is not a valid URL';
    default:
      return `admin connection failed${code ? ` (${code})` : ''}`;
  }
}

const ER_PARSE_ERROR = 1064;
const ER_NO_SUCH_THREAD = 1094;

/**
 * Ephemeral MySQL / MariaDB logins (STANDARDS §7.2): one account per grant, `<prefix><task>_<random>`
 * (≤ 32 characters, from agent-sts's own ids only), a random password, MAX_USER_CONNECTIONS and the
 * GRANTs (object privileges or roles) of the granted scopes — or, for a scope whose grant gives the
 * `role` parameter, that role (one of the scope's grantableRoles).
 *
 * MySQL and MariaDB have no expiry for an account (`PASSWORD EXPIRE INTERVAL` only forces a password
 * change, in days), so nothing upstream ends the credential by itself: the expiry is enforced by the
 * sweep calling revoke() (needsActiveRevocation). Revocation: ACCOUNT LOCK (no new logins), KILL every
 * session of the user (DROP USER leaves open sessions working), DROP USER IF EXISTS — idempotent.
 *
 * The password travels in the CREATE USER statement (as a bound value, never concatenated); MySQL
 * rewrites such statements in its logs, for MariaDB keep the general log off for the admin login.
 */
export const mysqlIssuerPlugin: CredentialIssuerPlugin<MysqlIssuerConfig> = {
  type: 'mysql',
  configSchema: MysqlIssuerConfigSchema as unknown as z.ZodType<MysqlIssuerConfig>,
  capabilities: () => CAPABILITIES,
  checkGrant: checkMysqlGrant,
  create(name, config, deps): CredentialIssuer {
    let pool: Mysql.Pool | undefined;
    let flavor: Promise<'mariadb' | 'mysql'> | undefined;
    const adminUrl = () => deps.secret(config.adminUrl, `credentialIssuers.${name}.adminUrl`);
    const getPool = () =>
      (pool ??= mysql2().createPool({ uri: adminUrl().reveal(), connectionLimit: 4, connectTimeout: config.timeoutMs, multipleStatements: false, enableKeepAlive: true }));
    /** Every admin statement is bounded: mysql2 gives up after timeoutMs (PROTOCOL_SEQUENCE_TIMEOUT) and the connection is then discarded. */
    const bounded = (sql: string): Mysql.QueryOptions => ({ sql, timeout: config.timeoutMs });
    const target = () => {
      const u = new URL(adminUrl().reveal());
      return {
        host: config.publicHost ?? u.hostname,
        port: config.publicPort ?? Number(u.port || 3306),
        database: config.database ?? (decodeURIComponent(u.pathname.slice(1)) || undefined),
      };
    };
    const unavailable = (e: unknown, secrets: readonly string[]) =>
      new UpstreamUnavailable('the target database is unavailable; try again later', {
        cause: scrubbed(e, secrets),
        detail: { issuer: name, code: (e as { code?: string }).code },
      });

    async function withAdmin<T>(fn: (c: Mysql.PoolConnection) => Promise<T>, secrets: readonly string[] = []): Promise<T> {
      let conn: Mysql.PoolConnection;
      try {
        conn = await getPool().getConnection();
      } catch (e) {
        throw unavailable(e, secrets);
      }
      let broken = false;
      try {
        return await fn(conn);
      } catch (e) {
        if (e instanceof UpstreamUnavailable) throw e;
        if (isConnectivityError(e)) {
          broken = true; // a timed-out statement may still be running on it: never hand this connection out again
          throw unavailable(e, secrets);
        }
        throw scrubbed(e, secrets);
      } finally {
        if (broken) conn.destroy();
        else conn.release();
      }
    }

    async function serverFlavor(c: Mysql.PoolConnection): Promise<'mariadb' | 'mysql'> {
      flavor ??= c.query<Mysql.RowDataPacket[]>(bounded('SELECT VERSION() AS v')).then(([rows]) => (/mariadb/i.test(String(rows[0]?.v)) ? 'mariadb' : 'mysql'));
      return flavor.catch((e: unknown) => {
        flavor = undefined;
        throw e;
      });
    }

    /** Kills every session of `user` except our own; returns how many were killed. */
    async function killSessions(c: Mysql.PoolConnection, user: string): Promise<number> {
      const [rows] = await c.query<Mysql.RowDataPacket[]>(bounded('SELECT ID AS id FROM information_schema.PROCESSLIST WHERE USER = ? AND ID <> CONNECTION_ID()'), [user]);
      let killed = 0;
      for (const r of rows) {
        try {
          await c.query(bounded('KILL CONNECTION ?'), [Number(r.id)]);
          killed++;
        } catch (e) {
          if ((e as { errno?: number }).errno !== ER_NO_SUCH_THREAD) throw e; // it ended on its own meanwhile
        }
      }
      return killed;
    }

    /** The user name is derived from our own ids only, never from request input; <= 32 characters. */
    function planHandle(req: { taskId: string }): MysqlHandle {
      const room = MYSQL_MAX_USER_LENGTH - config.userPrefix.length - 1 - RANDOM_SUFFIX_LENGTH;
      const task = req.taskId.toLowerCase().replace(/[^a-z0-9]/g, '').slice(0, Math.min(12, room));
      return { user: `${config.userPrefix}${task}_${randomLowerId(RANDOM_SUFFIX_LENGTH)}`, host: config.host };
    }

    function grantStatements(grants: readonly MysqlGrant[], flavorOf: 'mariadb' | 'mysql', account: string): string[] {
      const out: string[] = [];
      const roles: string[] = [];
      for (const g of grants) {
        if ('role' in g) {
          out.push(`GRANT ${mysql2().escapeId(g.role)} TO ${account}`);
          roles.push(g.role);
          continue;
        }
        const [db, table] = g.on.split('.') as [string, string];
        // At database level `_` and `%` are wildcards in GRANT (MYSQL-DOCS GRANT); `\_` is a literal `_`.
        const object = table === '*' ? `${mysql2().escapeId(db.replace(/_/g, '\\_'))}.*` : `${mysql2().escapeId(db)}.${mysql2().escapeId(table)}`;
        const privileges = [...new Set(g.privileges)].join(', '); // keywords from the allow-list only
        out.push(`GRANT ${privileges} ON ${object} TO ${account}`);
      }
      const distinctRoles = [...new Set(roles)];
      if (distinctRoles.length) {
        if (flavorOf === 'mysql') out.push(`SET DEFAULT ROLE ALL TO ${account}`);
        else if (distinctRoles.length === 1) out.push(`SET DEFAULT ROLE ${mysql2().escapeId(distinctRoles[0]!)} FOR ${account}`);
        else throw new Error(`mysql issuer ${name}: MariaDB allows one default role per user; the granted scopes map to ${distinctRoles.length}`);
      }
      return out;
    }

    /** Locks the account, kills its sessions, drops it. Idempotent. */
    async function dropUser(handle: MysqlHandle): Promise<void> {
      await withAdmin(async (c) => {
        const account = mysql2().format('?@?', [handle.user, handle.host]);
        try {
          await c.query(bounded(`ALTER USER IF EXISTS ${account} ACCOUNT LOCK`)); // stop new logins now
        } catch (e) {
          if ((e as { errno?: number }).errno !== ER_PARSE_ERROR) throw e; // servers without ACCOUNT LOCK: drop comes next anyway
          deps.logger.warn({ issuer: name, user: handle.user }, 'ACCOUNT LOCK is not supported by this server; dropping the user directly');
        }
        let killed = await killSessions(c, handle.user);
        await c.query(bounded(`DROP USER IF EXISTS ${account}`));
        killed += await killSessions(c, handle.user); // a session that was mid-login when we looked
        deps.logger.debug({ issuer: name, user: handle.user, killed }, 'mysql login revoked');
      });
    }

    function checkHandle(h: unknown): MysqlHandle {
      const handle = h as MysqlHandle;
      if (typeof handle.user !== 'string' || !handle.user.startsWith(config.userPrefix) || !/^[a-z0-9_]{1,32}$/.test(handle.user))
        throw new Error(`mysql issuer ${name}: refusing to revoke a user without the ${config.userPrefix} prefix`);
      if (typeof handle.host !== 'string' || !/^[A-Za-z0-9.%_:/-]{1,255}$/.test(handle.host))
        throw new Error(`mysql issuer ${name}: the revocation handle has no valid host`);
      return handle;
    }

    return {
      type: 'mysql',
      name,
      issuedTokenTypes: [TOKEN_TYPE.mysqlCredentials],
      needsActiveRevocation: true,
      capabilities: CAPABILITIES,
      planHandle,
      async issue(req, ctx) {
        const handle = (req.plannedHandle ?? planHandle(req)) as MysqlHandle;
        refuseGrantProblems(name, checkMysqlGrant(config, grantOfDecision(req.decision)));
        const grants = req.decision.grantedScopes.flatMap((s) => grantsOf(config, s, paramsOf(req.decision, s)));
        if (!grants.length) throw new Error(`mysql issuer ${name}: granted scopes map to no grants`);
        const password = randomBase62(32);
        const expiresAt = new Date(ctx.now.getTime() + req.ttlSeconds * 1000);
        let sent = false;
        try {
          await withAdmin(async (c) => {
            const account = mysql2().format('?@?', [handle.user, handle.host]);
            const statements = grantStatements(grants, await serverFlavor(c), account);
            // DDL commits implicitly: on any failure, drop what was created so issuance stays all-or-nothing.
            let created = false;
            try {
              sent = true;
              await c.query(
                bounded(`CREATE USER ${account} IDENTIFIED BY ? WITH MAX_USER_CONNECTIONS ${config.maxConnections} PASSWORD EXPIRE NEVER`),
                [password],
              );
              created = true;
              for (const s of statements) await c.query(bounded(s));
            } catch (e) {
              // On this connection only while it still answers; after a timeout or a lost connection the clean-up below does it.
              if (created && !isConnectivityError(e)) await c.query(bounded(`DROP USER IF EXISTS ${account}`)).catch(() => {});
              throw e;
            }
          }, [password]);
        } catch (e) {
          // CREATE USER (or a GRANT) sent, outcome unknown (timed out, connection lost): the user may exist. Drop it over a
          // fresh connection (idempotent), so a failed issuance leaves nothing.
          if (sent && e instanceof UpstreamUnavailable)
            await dropUser(handle).catch((de: unknown) =>
              deps.logger.error({ issuer: name, user: handle.user, code: (de as { code?: string }).code }, 'could not drop the user of a failed issuance; drop it by hand'),
            );
          throw e;
        }
        const t = target();
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.mysqlCredentials,
          tokenType: 'N_A',
          expiresAt,
          fingerprint: credentialFingerprint(password),
          accessToken: new Secret(password),
          structured: new Secret({ ...t, username: handle.user, password, expires_at: expiresAt.toISOString() }),
          revocationHandle: handle,
        };
      },
      async revoke(h) {
        await dropUser(checkHandle(h));
      },
      async listManaged() {
        // LEFT(): `_` in a prefix is a LIKE wildcard. Needs SELECT on mysql.user (the admin login has it to CREATE USER).
        const [rows] = await withAdmin((c) =>
          c.query<Mysql.RowDataPacket[]>('SELECT User AS user, Host AS host FROM mysql.user WHERE LEFT(User, CHAR_LENGTH(?)) = ? ORDER BY User', [config.userPrefix, config.userPrefix]),
        );
        return rows.map((r) => ({ name: String(r.user), handle: { user: String(r.user), host: String(r.host) } }));
      },
      /** `SELECT 1` over the admin pool: reachable, and the admin login is accepted. */
      async health() {
        return adminConnectionHealth(adminUrl, () => withAdmin((c) => c.query({ sql: 'SELECT 1', timeout: HEALTH_TIMEOUT_MS })), healthDetail);
      },
      async close() {
        await pool?.end();
        pool = undefined;
        flavor = undefined;
      },
    };
  },
};
