import pg from 'pg';
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
import { scramSha256Verifier } from './scram.js';

const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)');

export const PostgresIssuerConfigSchema = z
  .object({
    /** Admin connection (CREATEROLE, ADMIN on the group roles). A reference, never inline. */
    adminUrl: SecretRefSchema,
    /** scope -> group role the login role becomes a member of. */
    roles: z.record(z.string().min(1), identifier).refine((r) => Object.keys(r).length > 0, 'map at least one scope to a group role'),
    /**
     * scope -> other group roles a policy grant may choose for it with the scope parameter `role`
     * (`{ name: write, params: { role: ledger_writer } }`), instead of the scope's role in `roles`.
     * The allow-list: a policy can never name a role that is not here.
     */
    grantableRoles: z.record(z.string().min(1), z.array(identifier).min(1)).default({}),
    /** Prefix of generated login roles; `doctor`/sweeps recognise agent-sts's roles by it. */
    rolePrefix: z.string().regex(/^[a-z][a-z0-9_]{0,11}$/).default('ags_'),
    connectionLimit: z.number().int().min(1).max(1000).default(5),
    /**
     * Bound of each admin connection attempt and of each statement, milliseconds (connect timeout;
     * client-side query timeout; issuance statements also carry SET LOCAL statement_timeout).
     */
    timeoutMs: z.number().int().min(100).max(60_000).default(5000),
    ...publicEndpointFields,
  })
  .strict()
  .superRefine(grantableRolesNeedDefaults('roles', 'role'));
export type PostgresIssuerConfig = z.infer<typeof PostgresIssuerConfigSchema>;

export interface PostgresHandle {
  role: string;
  [key: string]: unknown;
}

/**
 * A pg client that closes its socket when connecting fails. pg leaves it open (and stops its connect
 * timer) when the peer sent something it took for an error message, as a server that is not
 * PostgreSQL does: with a real server the server hangs up, with anything else nothing ever would.
 */
class AdminClient extends pg.Client {
  override connect(): Promise<pg.Client>;
  override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void;
  override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | void {
    const close = () => this.connection.stream.destroy();
    if (!callback)
      return super.connect().catch((e: unknown) => {
        close();
        throw e;
      });
    super.connect(((err: Error | null, c: pg.Client) => {
      if (err) close();
      (callback as (err: Error | null, c: pg.Client) => void)(err, c);
    }) as (err: Error) => void);
  }
}

/** pg's client-side query timeout (`query_timeout`): the error has no code, only this message. */
function isQueryTimeout(e: unknown): boolean {
  return e instanceof Error && e.message === 'Query read timeout';
}

/**
 * Network-level failures and timeouts: the database is down, unreachable or not answering, not a
 * bug. 57014 is a statement cancelled by statement_timeout.
 */
function isConnectivityError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return isQueryTimeout(e) || ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P03', '57014', '08006', '08001', '08004'].includes(code);
}

/**
 * Revocable: the role is dropped and its sessions terminated. No upstream bound on the lifetime
 * (VALID UNTIL takes any timestamp); the sweep's revoke() at expiry also ends sessions that VALID
 * UNTIL would leave open.
 */
const CAPABILITIES: IssuerCapabilities = Object.freeze({ revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS, recordsBeforeIssue: true });

/** What a failed admin connection means, from SQLSTATE / socket codes only (server messages are not repeated). */
function healthDetail(e: unknown): string {
  const code = safeCode(e);
  const net = networkDetail(code, 'admin');
  if (net) return net;
  switch (code) {
    case '28P01':
      return 'admin login rejected: wrong password (28P01)';
    case '28000':
      return 'admin login rejected: no such role or no pg_hba.conf entry (28000)';
    case '3D000':
      return 'the admin database does not exist (3D000)';
    case '53300':
      return 'the server has no connection slots left (53300)';
    case '57P03':
      return 'the server is starting up or shutting down (57P03)';
    case 'ERR_INVALID_URL':
      return 'the admin URL is not a valid URL';
    default:
      return `admin connection failed${code ? ` (${code})` : ''}`;
  }
}

/** The group role a granted scope joins: the grant's `role` parameter (checked against grantableRoles) or the scope's default. */
const groupRoleOf = (config: PostgresIssuerConfig, scope: string, params: Readonly<Record<string, string>>): string | undefined =>
  params.role ?? (Object.hasOwn(config.roles, scope) ? config.roles[scope] : undefined);

/** A grant for a postgres target: only the `role` parameter, naming the scope's default role or one of its grantableRoles; no session tags. */
export function checkPostgresGrant(config: PostgresIssuerConfig, grant: GrantRequirements): string[] {
  const allowed = (scope: string) => (Object.hasOwn(config.roles, scope) ? [config.roles[scope]!, ...(Object.hasOwn(config.grantableRoles, scope) ? config.grantableRoles[scope]! : [])] : []);
  return sqlRoleParamProblems('postgres', grant, allowed);
}

/**
 * Ephemeral PostgreSQL logins: one role per grant with LOGIN, a random password sent as a SCRAM
 * verifier, VALID UNTIL the expiry and membership in the group roles of the granted scopes (a
 * grant's `role` parameter picks one of the scope's grantableRoles instead of its default).
 * Revocation: NOLOGIN, terminate sessions, drop what it owns, drop the role (idempotent).
 */
export const postgresPlugin: CredentialIssuerPlugin<PostgresIssuerConfig> = {
  type: 'postgres',
  configSchema: PostgresIssuerConfigSchema as unknown as z.ZodType<PostgresIssuerConfig>,
  capabilities: () => CAPABILITIES,
  checkGrant: checkPostgresGrant,
  create(name, config, deps): CredentialIssuer {
    let pool: pg.Pool | undefined;
    const adminUrl = () => deps.secret(config.adminUrl, `credentialIssuers.${name}.adminUrl`);
    // Bounded: connecting (and waiting for a pooled connection) and every statement, by timeoutMs.
    const getPool = () => {
      if (pool) return pool;
      pool = new pg.Pool({ Client: AdminClient, connectionString: adminUrl().reveal(), max: 4, connectionTimeoutMillis: config.timeoutMs, query_timeout: config.timeoutMs });
      // An idle admin connection that dies (the database restarts, an administrator terminates it,
      // the network drops it) is reported by the pool as an 'error' event, which would otherwise
      // crash the broker. The pool has already discarded that connection; the next call opens another.
      pool.on('error', (e: Error & { code?: string }) =>
        deps.logger.warn({ issuer: name, code: e.code, err: { message: e.message } }, 'an idle admin connection to the target database was closed; the next call reconnects'),
      );
      return pool;
    };
    const target = () => {
      const u = new URL(adminUrl().reveal());
      return {
        host: config.publicHost ?? u.hostname,
        port: config.publicPort ?? Number(u.port || 5432),
        database: config.database ?? decodeURIComponent(u.pathname.slice(1) || 'postgres'),
      };
    };

    async function withAdmin<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
      let client: pg.PoolClient;
      try {
        client = await getPool().connect();
      } catch (e) {
        throw new UpstreamUnavailable('the target database is unavailable; try again later', { cause: e, detail: { issuer: name, code: (e as { code?: string }).code } });
      }
      let broken: Error | undefined;
      try {
        return await fn(client);
      } catch (e) {
        if (isConnectivityError(e)) {
          // A connection that timed out or failed may still have a statement in flight: never reuse it.
          broken = e as Error;
          throw new UpstreamUnavailable('the target database is unavailable; try again later', { cause: e, detail: { issuer: name, code: (e as { code?: string }).code ?? (isQueryTimeout(e) ? 'query-timeout' : undefined) } });
        }
        throw e;
      } finally {
        client.release(broken);
      }
    }

    /** Ends a login role: NOLOGIN, terminate its sessions, drop what it owns, drop it. Idempotent. */
    async function dropRole(role: string): Promise<void> {
      await withAdmin(async (c) => {
        const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [role]);
        if (!exists.rowCount) return;
        const ident = c.escapeIdentifier(role);
        await c.query(`ALTER ROLE ${ident} NOLOGIN`);
        await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()', [role]);
        await c.query(`DROP OWNED BY ${ident}`);
        await c.query(`DROP ROLE IF EXISTS ${ident}`);
      });
    }

    /** The role name is derived from our own ids only, never from request input; <= 63 bytes. */
    function planHandle(req: { taskId: string }): PostgresHandle {
      const task = req.taskId.replace(/[^a-z0-9]/g, '').slice(0, 12);
      return { role: `${config.rolePrefix}${task}_${randomLowerId(10)}` };
    }

    return {
      type: 'postgres',
      name,
      issuedTokenTypes: [TOKEN_TYPE.postgresCredentials],
      needsActiveRevocation: true,
      capabilities: CAPABILITIES,
      planHandle,
      async issue(req, ctx) {
        const handle = (req.plannedHandle ?? planHandle(req)) as PostgresHandle;
        refuseGrantProblems(name, checkPostgresGrant(config, grantOfDecision(req.decision)));
        const groups = [...new Set(req.decision.grantedScopes.map((s) => groupRoleOf(config, s, paramsOf(req.decision, s))).filter((r): r is string => Boolean(r)))];
        if (!groups.length) throw new Error(`postgres issuer ${name}: granted scopes map to no group role`);
        const password = randomBase62(32);
        const expiresAt = new Date(ctx.now.getTime() + req.ttlSeconds * 1000);
        let committing = false;
        try {
          await withAdmin(async (c) => {
            await c.query('BEGIN');
            try {
              // The server cancels a statement that runs too long (lock waits included): the transaction aborts, nothing is created.
              await c.query(`SET LOCAL statement_timeout = ${config.timeoutMs}`);
              const role = c.escapeIdentifier(handle.role);
              await c.query(
                `CREATE ROLE ${role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT ${config.connectionLimit} ` +
                  `PASSWORD ${c.escapeLiteral(scramSha256Verifier(password))} VALID UNTIL ${c.escapeLiteral(expiresAt.toISOString())}`,
              );
              for (const g of groups) await c.query(`GRANT ${c.escapeIdentifier(g)} TO ${role}`);
              committing = true;
              await c.query('COMMIT');
            } catch (e) {
              // After a client-side timeout the connection is discarded instead: the server rolls back an open transaction when it goes.
              if (!isQueryTimeout(e)) await c.query('ROLLBACK').catch(() => {});
              throw e;
            }
          });
        } catch (e) {
          // COMMIT sent but its answer lost (timeout, connection gone): the role may exist. Drop it (idempotent), so a failed issuance leaves nothing.
          if (committing && e instanceof UpstreamUnavailable)
            await dropRole(handle.role).catch((de: unknown) =>
              deps.logger.error({ issuer: name, role: handle.role, code: (de as { code?: string }).code }, 'could not drop the login role of a failed issuance; drop it by hand'),
            );
          throw e;
        }
        const t = target();
        return {
          id: req.credentialId,
          issuedTokenType: TOKEN_TYPE.postgresCredentials,
          tokenType: 'N_A',
          expiresAt,
          fingerprint: credentialFingerprint(password),
          accessToken: new Secret(password),
          structured: new Secret({ ...t, username: handle.role, password, expires_at: expiresAt.toISOString() }),
          revocationHandle: handle,
        };
      },
      async revoke(h) {
        const handle = h as PostgresHandle;
        if (typeof handle.role !== 'string' || !handle.role.startsWith(config.rolePrefix))
          throw new Error(`postgres issuer ${name}: refusing to revoke a role without the ${config.rolePrefix} prefix`);
        await dropRole(handle.role);
      },
      async listManaged() {
        // left(): `_` in a prefix is a LIKE wildcard.
        const r = await withAdmin((c) => c.query<{ rolname: string }>('SELECT rolname FROM pg_roles WHERE left(rolname, length($1)) = $1 ORDER BY rolname', [config.rolePrefix]));
        return r.rows.map((x) => ({ name: x.rolname, handle: { role: x.rolname } }));
      },
      /** `SELECT 1` over the admin pool: reachable, and the admin login is accepted. */
      async health() {
        return adminConnectionHealth(adminUrl, () => withAdmin((c) => c.query({ text: 'SELECT 1', query_timeout: HEALTH_TIMEOUT_MS } as pg.QueryConfig)), healthDetail);
      },
      async close() {
        await pool?.end();
        pool = undefined;
      },
    };
  },
};
