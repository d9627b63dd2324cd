import { z } from 'zod';
import { PolicySchema } from '../policy/policy-schema.js';
import { SecretRefSchema } from './secret-ref.js';

export const duration = z.union([
  z.number().int().positive(),
  z.string().regex(/^\d+\s*(s|m|h|d)?$/, 'a duration like 90s, 15m, 2h'),
]);

const PluginInstanceSchema = z
  .object({
    name: z.string().regex(/^[a-z0-9][a-z0-9-]{0,62}$/, 'lower-case letters, digits and -, at most 63'),
    type: z.string().min(1),
    config: z.unknown().default({}),
  })
  .strict();

const BearerClientSchema = z
  .object({
    name: z.string().min(1),
    /** Hex SHA-256 of the bearer token (the token itself never appears in config). */
    tokenSha256: z.string().regex(/^[0-9a-f]{64}$/, '64 lower-case hex characters (sha256 of the token)').optional(),
    token: SecretRefSchema.optional(),
    /** A bootstrap credential for first set-up: disable it once a role mapping works. */
    disabled: z.boolean().default(false),
  })
  .strict()
  .refine((c) => Boolean(c.tokenSha256) !== Boolean(c.token), 'give exactly one of tokenSha256 or token');

/**
 * Who holds a role: every identity the named trust provider verifies that matches all the given
 * conditions (an anchored subject pattern, attribute values, for people: a group).
 */
export const RoleMappingSchema = z
  .object({
    role: z.enum(['admin', 'auditor']),
    provider: z.string().min(1),
    subjectPattern: z.string().min(1).optional(),
    attributes: z.record(z.string(), z.union([z.string(), z.array(z.string()).min(1)])).default({}),
    groups: z.array(z.string().min(1)).min(1).optional(),
  })
  .strict()
  .refine((m) => m.subjectPattern || Object.keys(m.attributes).length || m.groups, {
    message: 'a role mapping needs a subjectPattern, attributes or groups: a whole provider is never an admin',
  });

/** A workload by its trust provider instance and subject (exact, or a regular expression matched whole). */
export const ServingWorkloadSchema = z
  .object({
    provider: z.string().min(1),
    subject: z.string().min(1).optional(),
    subjectPattern: z
      .string()
      .min(1)
      .refine((p) => {
        try {
          new RegExp(p);
          return true;
        } catch {
          return false;
        }
      }, 'not a valid regular expression')
      .optional(),
  })
  .strict()
  .refine((w) => (w.subject === undefined) !== (w.subjectPattern === undefined), 'give exactly one of subject or subjectPattern: never every workload of a provider');
export type ServingWorkload = z.infer<typeof ServingWorkloadSchema>;

const servingPatterns = new Map<string, RegExp>();
/** Whether `workload` is the one `w` names (subjectPattern matched whole). */
export function servesAs(w: ServingWorkload, workload: { provider: string; subject: string }): boolean {
  if (w.provider !== workload.provider) return false;
  if (w.subject !== undefined) return w.subject === workload.subject;
  let re = servingPatterns.get(w.subjectPattern!);
  if (!re) servingPatterns.set(w.subjectPattern!, (re = new RegExp(`^(?:${w.subjectPattern})$`)));
  return re.test(workload.subject);
}

export const TargetSchema = z
  .object({
    name: z.string().regex(/^[A-Za-z0-9._-]+$/, 'letters, digits and . _ - only'),
    /** RFC 8707 resource URI(s) that select this target (exact match after normalisation). */
    resources: z.array(z.string().url()).default([]),
    /** RFC 8693 audience value(s) that select this target. */
    audiences: z.array(z.string().min(1)).default([]),
    /** Credential issuer instance that mints for this target. */
    issuer: z.string().min(1),
    /**
     * The issuer is registered through the admin API, not in this file: requests for the target
     * are answered `temporarily_unavailable` while it is missing or disabled.
     */
    issuerRegisteredAtRuntime: z.boolean().default(false),
    /**
     * At most this many credentials of this target live at once in one task (issuing, active or
     * being revoked, and not expired): a runaway agent cannot fill the database with logins. Only
     * for issuers that record a credential before creating it (capabilities.recordsBeforeIssue).
     */
    maxLivePerTask: z.number().int().min(1).max(10_000).optional(),
    /**
     * The same over a whole delegation tree: the task opened by an attestation and every sub-agent's
     * task under it, so spawning sub-agents does not multiply maxLivePerTask.
     */
    maxLivePerTree: z.number().int().min(1).max(100_000).optional(),
    /** Scopes that exist at this target (requests for others are invalid_scope). */
    scopes: z.array(z.string().min(1)).optional(),
    /**
     * DPoP (RFC 9449) for this target's access tokens. `off`: Bearer tokens, even for a request
     * with a proof (a resource server that takes only Bearer). `optional`: a request with a DPoP
     * proof gets a token bound to the proof's key (`cnf.jkt`, `token_type: DPoP`), one without
     * gets a Bearer token. `required`: only bound tokens; a request without a proof is refused.
     * Only for issuers that can bind their tokens (capabilities.ownJwts: agent-sts-jwt).
     */
    dpop: z.enum(['off', 'optional', 'required']).default('off'),
    /**
     * The workloads that serve this target (its MCP server, its API): each may exchange an
     * agent-sts-jwt access token issued for this target, presented as subject_token with its own
     * attestation as actor_token, for credentials of its own to call further upstream on behalf of
     * the same agent and person, in the same task (RFC 8693 delegation; the chain grows a nested
     * `act`). Instead of passing the token through. Absent: such tokens are not exchangeable.
     */
    servedBy: z.array(ServingWorkloadSchema).min(1).optional(),
  })
  .strict();

const INVENTORY_DEFAULTS = { flushInterval: '5s', staleAfterDays: 30, unusedGrantAfterDays: 30, maxIdentitiesInMemory: 50_000 } as const;
export const InventorySchema = z
  .object({
    /** How often each replica writes what it saw (coalesced upserts); also the staleness bound of the stored inventory. */
    flushInterval: duration.default(INVENTORY_DEFAULTS.flushInterval),
    /** An identity not seen for this many days is flagged `stale`. */
    staleAfterDays: z.number().int().min(1).max(3650).default(INVENTORY_DEFAULTS.staleAfterDays),
    /** A grant not used for this many days is flagged (least-privilege recommendation). */
    unusedGrantAfterDays: z.number().int().min(1).max(3650).default(INVENTORY_DEFAULTS.unusedGrantAfterDays),
    /** Block (kill switch) identities not seen for this many days; off when absent. */
    autoDisableAfterDays: z.number().int().min(1).max(3650).optional(),
    /** Identities each replica keeps in memory for signals (least recently seen leave first). */
    maxIdentitiesInMemory: z.number().int().min(100).max(10_000_000).default(INVENTORY_DEFAULTS.maxIdentitiesInMemory),
  })
  .strict();

const SIGNALS_DEFAULTS = { denialBurst: { threshold: 5, window: '1m' } } as const;
export const SignalsSchema = z
  .object({
    /** `denial_burst`: this many denials of one identity within `window` (counted per replica). */
    denialBurst: z
      .object({ threshold: z.number().int().min(2).max(100_000).default(5), window: duration.default('1m') })
      .strict()
      .default(SIGNALS_DEFAULTS.denialBurst),
    /** `rate_spike` (off when absent): an identity's exchanges in one minute reach `minPerMinute` and `factor` times its usual rate. */
    rateSpike: z
      .object({ factor: z.number().min(1.5).max(1000).default(10), minPerMinute: z.number().int().min(1).default(60) })
      .strict()
      .optional(),
    /** POSTed one JSON notice per flagged exchange (non-blocking, bounded queue); signed (X-Agent-STS-Signature) when `secret` is set. */
    webhook: z
      .object({ url: z.string().url(), secret: SecretRefSchema.optional(), queueSize: z.number().int().min(1).max(100_000).default(1000) })
      .strict()
      .optional(),
  })
  .strict();

export const AppConfigSchema = z
  .object({
    server: z
      .object({
        host: z.string().default('127.0.0.1'),
        port: z.number().int().min(0).max(65535).default(8787),
        /** Public issuer URL. Default: the address the server listens on. */
        issuer: z.string().url().optional(),
        bodyLimitBytes: z.number().int().min(1024).max(1_048_576).default(65_536),
        trustProxy: z.boolean().default(false),
        /** How often each replica looks for trust providers registered or changed through the admin API. */
        providerReloadInterval: duration.default('2s'),
      })
      .strict()
      .default({ host: '127.0.0.1', port: 8787, bodyLimitBytes: 65_536, trustProxy: false, providerReloadInterval: '2s' }),
    storage: z
      .object({ url: z.string().min(1).default('file:./data/agent-sts.db') })
      .strict()
      .default({ url: 'file:./data/agent-sts.db' }),
    keys: z
      .object({
        /** Key-encryption key (32 bytes, base64 or hex). `devGenerateInto` writes one: dev only. */
        kek: z.union([SecretRefSchema, z.object({ devGenerateInto: z.string().min(1) }).strict()]),
        /** How long a new key is published before it signs (>= verifiers' JWKS cache age). */
        publishAhead: duration.default('10m'),
        /** How often replicas re-read the key table. */
        reloadInterval: duration.default('30s'),
        /**
         * Where the server makes its ES256 signatures: in place at the end of each event-loop turn
         * (while the writer commits the turn's records), or on a helper thread: `auto` moves them
         * there while the event loop is saturated, busy more than 98 % of the time (back below
         * 60 %), `on` always, `off` never (bench/README.md).
         */
        signingThread: z.enum(['auto', 'on', 'off']).default('auto'),
      })
      .strict(),
    tokens: z
      .object({
        agentTokenMaxTtl: duration.default('1h'),
        accessTokenMaxTtl: duration.default('15m'),
        maxTaskTtl: duration.default('8h'),
        clockTolerance: duration.default('60s'),
        /** Largest subject/actor token accepted, bytes. */
        maxTokenBytes: z.number().int().min(1024).max(65_536).default(16_384),
        /** RFC 8693 §4.1 delegation depth cap. */
        maxDelegationDepth: z.number().int().min(1).max(10).default(5),
        /** RFC 7009: revoking an agent token ends its whole task (every credential in it), not just the token. */
        revokeEndsTask: z.boolean().default(false),
        /** DPoP (RFC 9449): agent tokens only for requests with a proof, so every agent token is bound to a key its holder must prove. */
        requireDpop: z.boolean().default(false),
        /**
         * DPoP (RFC 9449 §8): every proof must carry a nonce this broker gave (the `DPoP-Nonce`
         * header; each lives 1-2 minutes and is valid on every replica), so a proof cannot be made
         * ahead of its use.
         */
        dpopNonce: z.boolean().default(false),
      })
      .strict()
      .default({
        agentTokenMaxTtl: '1h',
        accessTokenMaxTtl: '15m',
        maxTaskTtl: '8h',
        clockTolerance: '60s',
        maxTokenBytes: 16_384,
        maxDelegationDepth: 5,
        revokeEndsTask: false,
        requireDpop: false,
        dpopNonce: false,
      }),
    sweep: z
      .object({ interval: duration.default('15s') })
      .strict()
      .default({ interval: '15s' }),
    /** The issuance log. */
    audit: z
      .object({
        /** Each writer signs a checkpoint of its chain after this many records or this long (whichever comes first), and at shutdown. */
        checkpointEvery: z
          .object({ records: z.number().int().min(1).max(10_000_000).default(10_000), interval: duration.default('60s') })
          .strict()
          .default({ records: 10_000, interval: '60s' }),
      })
      .strict()
      .default({ checkpointEvery: { records: 10_000, interval: '60s' } }),
    logging: z
      .object({ level: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info') })
      .strict()
      .default({ level: 'info' }),
    auth: z
      .object({
        /** Bootstrap credentials (static bearer tokens): for first set-up only. */
        auditors: z.array(BearerClientSchema).default([]),
        admins: z.array(BearerClientSchema).default([]),
        /** Secretless roles: identities verified by a trust provider, mapped to a role. */
        roles: z.array(RoleMappingSchema).default([]),
        /** RFC 7662 introspection clients (resource servers): static secrets, sent as Bearer or HTTP Basic (name:secret). */
        introspectionClients: z.array(BearerClientSchema).default([]),
      })
      .strict()
      .default({ auditors: [], admins: [], roles: [], introspectionClients: [] }),
    devIssuer: z
      .object({ enabled: z.boolean().default(false), dir: z.string().default('./data/dev-issuer') })
      .strict()
      .default({ enabled: false, dir: './data/dev-issuer' }),
    trustProviders: z.array(PluginInstanceSchema).default([]),
    credentialIssuers: z.array(PluginInstanceSchema).default([]),
    targets: z.array(TargetSchema).default([]),
    policy: PolicySchema.default({ rules: [] }),
    /** Just-in-time approval: who is told when a grant waits for a person's decision. */
    approvals: z
      .object({
        /** POSTed a JSON notice per new approval request; signed (X-Agent-STS-Signature) when `secret` is set. */
        webhook: z.object({ url: z.string().url(), secret: SecretRefSchema.optional() }).strict().optional(),
      })
      .strict()
      .default({}),
    /** Identity inventory (src/inventory): who was seen, what they used, what they could obtain. */
    inventory: InventorySchema.default(INVENTORY_DEFAULTS),
    /** Behaviour signals raised on exchanges (src/signals): audit flags, metrics, optional webhook. */
    signals: SignalsSchema.default(SIGNALS_DEFAULTS),
  })
  .strict();

export type RawAppConfig = z.infer<typeof AppConfigSchema>;
export type TargetConfig = z.infer<typeof TargetSchema>;

/** A target's caps on live credentials (targets[].maxLivePerTask, maxLivePerTree). */
export interface LiveLimit {
  key: 'maxLivePerTask' | 'maxLivePerTree';
  max: number;
}
export function liveLimitsOf(t: Pick<TargetConfig, 'maxLivePerTask' | 'maxLivePerTree'>): LiveLimit[] {
  const out: LiveLimit[] = [];
  if (t.maxLivePerTask !== undefined) out.push({ key: 'maxLivePerTask', max: t.maxLivePerTask });
  if (t.maxLivePerTree !== undefined) out.push({ key: 'maxLivePerTree', max: t.maxLivePerTree });
  return out;
}
export type BearerClientConfig = z.infer<typeof BearerClientSchema>;
export type InventoryConfig = z.infer<typeof InventorySchema>;
export type SignalsConfig = z.infer<typeof SignalsSchema>;
