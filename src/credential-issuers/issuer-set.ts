import type { Db } from '../storage/prisma-client.js';
import type { Logger } from '../log/logger.js';
import type { AuditLog } from '../audit/audit-log.js';
import { seal } from '../lib/crypto.js';
import { createInstanceSet, type InstanceTable, type Member } from '../lib/instance-set.js';
import { createInstanceAdmin, inlineSecretPaths, InstanceChangeRefused } from '../lib/instance-admin.js';
import { sealedSecretAad, secretResolverFor } from '../config/secret-ref.js';
import { credentialIssuerCatalog } from './catalog.js';
import { OWNING_STATES } from '../core/types.js';
import type { CredentialIssuer, IssuerDeps } from './credential-issuer.js';

/** How long a replaced or removed issuer instance keeps its pools for requests still using it. */
const RETIRE_GRACE_MS = 30_000;

/**
 * The live set of credential issuers: the config file's plus those registered at runtime (table
 * CredentialIssuerInstance), polled by every replica like trust providers. A disabled runtime
 * issuer issues nothing but is still built, so that ending a task or the sweep can revoke what it
 * issued.
 */
export function createIssuerSet(opts: { configured: { name: string; type: string; config: unknown }[]; db: Db; logger: Logger; depsFor: (name: string) => IssuerDeps }) {
  let byName = new Map<string, Member<CredentialIssuer>>();
  const set = createInstanceSet<CredentialIssuer>({
    kind: 'credential issuer',
    configured: opts.configured,
    table: opts.db.credentialIssuerInstance as unknown as InstanceTable,
    catalog: credentialIssuerCatalog,
    logger: opts.logger,
    build: (name, type, config) => credentialIssuerCatalog.get(type).create(name, config, opts.depsFor(name)),
    activate: (members) => (byName = new Map(members.map((m) => [m.name, m]))),
    buildDisabled: true,
    retire: (i) =>
      setTimeout(() => void i.close?.().catch((e: unknown) => opts.logger.warn({ issuer: i.name, err: { message: (e as Error).message } }, 'closing a retired issuer failed')), RETIRE_GRACE_MS).unref(),
  });
  return {
    ...set,
    /** Any instance, enabled or not: for revocation. */
    get: (name: string): CredentialIssuer | undefined => byName.get(name)?.instance,
    /** Enabled instances only: for issuance. */
    forIssuance: { get: (name: string): CredentialIssuer | undefined => (byName.get(name)?.enabled ? byName.get(name)!.instance : undefined) },
    all: (): CredentialIssuer[] => [...byName.values()].map((m) => m.instance),
    async close(): Promise<void> {
      for (const m of byName.values()) await m.instance.close?.();
    },
  };
}
export type IssuerSet = ReturnType<typeof createIssuerSet>;

/**
 * Replaces every `{ "seal": "<secret>" }` in a config given to the admin API by a sealed reference
 * for this issuer, and checks that sealed references given back (an update resending the config it
 * read) open for it. Inline `insecureValue`s are refused.
 */
function sealSecrets(name: string, config: unknown, kek: () => Buffer): unknown {
  const inline = inlineSecretPaths(config);
  if (inline.length) throw new InstanceChangeRefused(400, 'invalid credential issuer', `${inline.join(', ')}: give a secret as {"seal": "..."} (stored encrypted) or by reference (fromEnv / fromFile), never as insecureValue`);
  const open = secretResolverFor(name, {}, kek);
  const walk = (v: unknown, path: string): unknown => {
    if (Array.isArray(v)) return v.map((x, i) => walk(x, `${path}[${i}]`));
    if (!v || typeof v !== 'object') return v;
    const o = v as Record<string, unknown>;
    const keys = Object.keys(o);
    if (keys.length === 1 && keys[0] === 'seal') {
      if (typeof o.seal !== 'string' || !o.seal) throw new InstanceChangeRefused(400, 'invalid credential issuer', `${path}.seal: the secret must be a non-empty string`);
      return { sealed: seal(kek(), o.seal, sealedSecretAad(name)) };
    }
    if (keys.length === 1 && keys[0] === 'sealed' && typeof o.sealed === 'string') {
      try {
        open({ sealed: o.sealed }, path);
      } catch {
        throw new InstanceChangeRefused(400, 'invalid credential issuer', `${path}.sealed: does not open for issuer "${name}" (sealed for another issuer or under another key-encryption key); send the secret again as {"seal": "..."}`);
      }
      return o;
    }
    return Object.fromEntries(keys.map((k) => [k, walk(o[k], `${path}.${k}`)]));
  };
  return walk(config, 'config');
}

/** Changes to runtime credential issuers (admin API and CLI). */
export function createIssuerAdmin(deps: { issuers: IssuerSet; db: Db; audit: Pick<AuditLog, 'append'>; kek: () => Buffer }) {
  return createInstanceAdmin({
    kind: 'credential issuer',
    auditAction: 'admin.credential-issuer',
    auditFields: (name) => ({ target: `credential-issuer:${name}` }),
    // A candidate is fit when its plugin accepts the config and builds (pools are lazy).
    set: { ...deps.issuers, checkFits: (name, c) => deps.issuers.checkFits({ name, ...c }, () => {}) },
    table: deps.db.credentialIssuerInstance as unknown as InstanceTable,
    audit: deps.audit,
    prepare: (name, config) => sealSecrets(name, config, deps.kek),
    async beforeRemove(name) {
      const live = await deps.db.credential.count({ where: { issuerName: name, state: { in: OWNING_STATES } } });
      if (live)
        throw new InstanceChangeRefused(409, 'in use', `"${name}" has ${live} credential(s) that are not yet revoked or expired; disable it (it stops issuing but can still revoke), end their tasks or wait for them to expire, then remove it`);
    },
  });
}
