import pg from 'pg';
import { z } from 'zod';
import { publicEndpointFields } from '../database-fields.js';
import { Secret } from '../../core/secret.js';
import { credentialFingerprint, randomBase62, randomLowerId } from '../../lib/crypto.js';
import { TOKEN_TYPE } from '../../lib/urns.js';
import { SecretRefSchema } from '../../config/secret-ref.js';
import { UpstreamUnavailable } from '../../errors/sts-errors.js';
import { UNBOUNDED_TTL_SECONDS, type CredentialIssuer, type CredentialIssuerPlugin, type IssuerCapabilities } from '../credential-issuer.js';
import { HEALTH_TIMEOUT_MS, HealthProblem, networkDetail, probeHealth, safeCode } from '../health.js';
import { scramSha256Verifier } from './scram.js';

const identifier = z.string().regex(/^[a-z_][a-z0-9_]{0,62}$/, 'a lower-case SQL identifier ([a-z_][a-z0-9_]*, at most 63 bytes)');

export const PostgresIssuerConfigSchema = z
  .object({
    /** Admin connection (CREATEROLE, ADMIN on the group roles). A reference, never inline. */
    adminUrl: SecretRefSchema,
    /** scope -> group role the login role becomes a member of. */
    roles: z.record(z.string().min(1), identifier).refine((r) => Object.keys(r).length > 0, 'map at least one scope to a group role'),
    /** Prefix of generated login roles; `doctor`/sweeps recognise agent-sts's roles by it. */
    rolePrefix: z.string().regex(/^[a-z][a-z0-9_]{0,11}$/).default('ags_'),
    connectionLimit: z.number().int().min(1).max(1000).default(5),
    ...publicEndpointFields,
  })
  .strict();
export type PostgresIssuerConfig = z.infer<typeof PostgresIssuerConfigSchema>;

export interface PostgresHandle {
  role: string;
  [key: string]: unknown;
}

/** Network-level failures: the database is down or unreachable, not a bug. */
function isConnectivityError(e: unknown): boolean {
  const code = (e as { code?: string }).code ?? '';
  return ['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'ENOTFOUND', 'EHOSTUNREACH', '57P01', '57P03', '08006', '08001', '08004'].includes(code);
}

/**
 * Revocable: the role is dropped and its sessions terminated. No upstream bound on the lifetime
 * (VALID UNTIL takes any timestamp); the sweep's revoke() at expiry also ends sessions that VALID
 * UNTIL would leave open.
 */
const CAPABILITIES: IssuerCapabilities = Object.freeze({ revocable: true, minTtlSeconds: 1, maxTtlSeconds: UNBOUNDED_TTL_SECONDS });

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

/**
 * Ephemeral PostgreSQL logins: one role per grant with LOGIN, a random password sent as a SCRAM
 * verifier, VALID UNTIL the expiry and membership in the group roles of the granted scopes.
 * Revocation: NOLOGIN, terminate sessions, drop what it owns, drop the role (idempotent).
 */
export const postgresPlugin: CredentialIssuerPlugin<PostgresIssuerConfig> = {
  type: 'postgres',
  configSchema: PostgresIssuerConfigSchema as z.ZodType<PostgresIssuerConfig>,
  capabilities: () => CAPABILITIES,
  create(name, config, deps): CredentialIssuer {
    let pool: pg.Pool | undefined;
    const adminUrl = () => deps.secret(config.adminUrl, `credentialIssuers.${name}.adminUrl`);
    const getPool = () => (pool ??= new pg.Pool({ connectionString: adminUrl().reveal(), max: 4, connectionTimeoutMillis: 5000 }));
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
      try {
        return await fn(client);
      } catch (e) {
        if (isConnectivityError(e))
          throw new UpstreamUnavailable('the target database is unavailable; try again later', { cause: e, detail: { issuer: name, code: (e as { code?: string }).code } });
        throw e;
      } finally {
        client.release();
      }
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
        const groups = req.decision.grantedScopes.map((s) => config.roles[s]).filter((r): r is string => Boolean(r));
        if (!groups.length) throw new Error(`postgres issuer ${name}: granted scopes map to no group role`);
        const password = randomBase62(32);
        const expiresAt = new Date(ctx.now.getTime() + req.ttlSeconds * 1000);
        await withAdmin(async (c) => {
          await c.query('BEGIN');
          try {
            const role = c.escapeIdentifier(handle.role);
            await c.query(
              `CREATE ROLE ${role} WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE INHERIT CONNECTION LIMIT ${config.connectionLimit} ` +
                `PASSWORD ${c.escapeLiteral(scramSha256Verifier(password))} VALID UNTIL ${c.escapeLiteral(expiresAt.toISOString())}`,
            );
            for (const g of groups) await c.query(`GRANT ${c.escapeIdentifier(g)} TO ${role}`);
            await c.query('COMMIT');
          } catch (e) {
            await c.query('ROLLBACK').catch(() => {});
            throw e;
          }
        });
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
        await withAdmin(async (c) => {
          const exists = await c.query('SELECT 1 FROM pg_roles WHERE rolname = $1', [handle.role]);
          if (!exists.rowCount) return;
          const role = c.escapeIdentifier(handle.role);
          await c.query(`ALTER ROLE ${role} NOLOGIN`);
          await c.query('SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1 AND pid <> pg_backend_pid()', [handle.role]);
          await c.query(`DROP OWNED BY ${role}`);
          await c.query(`DROP ROLE IF EXISTS ${role}`);
        });
      },
      /** `SELECT 1` over the admin pool: reachable, and the admin login is accepted. */
      async health() {
        return probeHealth(async () => {
          try {
            adminUrl();
          } catch {
            throw new HealthProblem('the admin URL secret reference does not resolve');
          }
          await withAdmin((c) => c.query({ text: 'SELECT 1', query_timeout: HEALTH_TIMEOUT_MS } as pg.QueryConfig));
        }, healthDetail);
      },
      async close() {
        await pool?.end();
        pool = undefined;
      },
    };
  },
};
