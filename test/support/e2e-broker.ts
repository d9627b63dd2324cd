// The set-up most end-to-end files share: a fake OIDC issuer for the workloads, trusted as the
// `ci` provider (subjects test://{sub}); a scratch store; a real broker; and the clean-up of all of
// it, PostgreSQL logins included. The test still writes what it is about (issuers, targets, policy,
// tokens, ...) in `config`. For several brokers on one store, subprocess replicas or other trust
// providers in place of `ci`, use startBroker (test/support/broker.ts) directly.
import type { JWTPayload } from 'jose';
import { expect } from 'vitest';
import type { Telemetry } from '../../src/telemetry/otel.js';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from './broker.js';
import { createTestPostgresDatabase, createTestSqliteUrl, dropPgRolesWithPrefix, PG_ADMIN_URL } from './databases.js';

export const PG_CREDS = 'urn:agent-sts:token-type:postgres-credentials';

export interface E2eBrokerOptions {
  /** Names the scratch store (a temp directory, or a PostgreSQL database, starting with it). */
  name: string;
  /**
   * The broker's configuration: credentialIssuers, targets, policy and whatever else the test is
   * about. Storage and trust providers are the fixture's (see `ci` and `moreTrustProviders`).
   */
  config: Record<string, unknown> & { storage?: never; trustProviders?: never };
  /** Merged into the `ci` provider's config { issuer, audience: 'sts', subjectTemplate: 'test://{sub}' }. */
  ci?: Record<string, unknown>;
  /** Trust providers besides `ci` (e.g. a person's IdP the test started). */
  moreTrustProviders?: Record<string, unknown>[];
  /** The store: a SQLite file (default) or a PostgreSQL database. */
  storage?: 'sqlite' | 'postgresql';
  /** The broker's environment besides its test keys; PG_ADMIN is always PG_ADMIN_URL. */
  env?: NodeJS.ProcessEnv;
  /** Logins the broker's postgres issuer creates start with this; close() drops them. */
  pgRolePrefix?: string;
  telemetry?: Telemetry;
}

export interface E2eBroker {
  broker: TestBroker;
  /** The `ci` provider's issuer: signs the workloads' attestations. */
  workloads: FakeIssuer;
  /** A workload's attestation for test://{sub}: a JWT from `workloads` with the `ci` audience (and `claims`). */
  attest(sub: string, claims?: JWTPayload): Promise<string>;
  /** The start-up exchange (workload JWT -> agent token); expects 200. `task` is the task's id. */
  agentToken(sub: string, claims?: JWTPayload): Promise<{ token: string; task: string }>;
  /** A per-call exchange: the agent token as subject_token, plus `fields`; the answer as it is. */
  exchange(agent: string, fields: Record<string, string | string[]>): ReturnType<typeof postToken>;
  /** A PostgreSQL login for the agent token: audience `db`, scope `read` unless `fields` say otherwise. */
  pgLogin(agent: string, fields?: Record<string, string>): ReturnType<typeof postToken>;
  /** Closes the broker, the issuer and the store and drops the logins; once, whatever failed. */
  close(): Promise<void>;
}

/**
 * Starts the whole set-up (call it in beforeAll, and close() in afterAll). If start-up fails half
 * way, what was started is cleaned up before the error is thrown.
 */
export async function startE2eBroker(opts: E2eBrokerOptions): Promise<E2eBroker> {
  let workloads: FakeIssuer | undefined;
  let store: { url: string; drop(): Promise<void> } | undefined;
  let broker: TestBroker | undefined;
  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      // The broker first (it uses the store and the issuer's JWKS); every step runs even if one before it failed.
      const steps = [
        () => broker?.close(),
        () => workloads?.close(),
        () => store?.drop(),
        () => (opts.pgRolePrefix ? dropPgRolesWithPrefix(opts.pgRolePrefix) : undefined),
      ];
      const errors: unknown[] = [];
      for (const step of steps) {
        try {
          await step();
        } catch (e) {
          errors.push(e);
        }
      }
      if (errors.length) throw errors[0];
    })());

  try {
    workloads = await startFakeOidcIssuer();
    store = opts.storage === 'postgresql' ? await createTestPostgresDatabase(opts.name) : createTestSqliteUrl(opts.name);
    broker = await startBroker(
      {
        ...opts.config,
        storage: { url: store.url },
        trustProviders: [
          { name: 'ci', type: 'oidc', config: { issuer: workloads.issuer, audience: 'sts', subjectTemplate: 'test://{sub}', ...opts.ci } },
          ...(opts.moreTrustProviders ?? []),
        ],
      },
      { env: { PG_ADMIN: PG_ADMIN_URL, ...opts.env }, telemetry: opts.telemetry },
    );
  } catch (e) {
    await close().catch(() => {});
    throw e;
  }

  const b = broker;
  const w = workloads;
  const audience = (opts.ci?.audience as string | undefined) ?? 'sts';
  const attest = (sub: string, claims: JWTPayload = {}) => w.sign({ sub, aud: audience, ...claims });
  const exchange = (agent: string, fields: Record<string, string | string[]>) =>
    postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, ...fields });
  return {
    broker: b,
    workloads: w,
    attest,
    async agentToken(sub, claims) {
      const r = await postToken(b.url, { grant_type: TOKEN_EXCHANGE, subject_token: await attest(sub, claims), subject_token_type: JWT_TYPE });
      expect(r.status, r.text).toBe(200);
      return { token: String(r.json.access_token), task: String(r.json.task_id) };
    },
    exchange,
    pgLogin: (agent, fields = {}) => exchange(agent, { audience: 'db', scope: 'read', requested_token_type: PG_CREDS, ...fields }),
    close,
  };
}
