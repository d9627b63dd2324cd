import type { AuditLog } from '../audit/audit-log.js';
import type { Db } from '../storage/prisma-client.js';
import { createInstanceAdmin, inlineSecretPaths, InstanceChangeRefused } from '../lib/instance-admin.js';
import type { InstanceTable } from '../lib/instance-set.js';
import type { ProviderSet } from './provider-set.js';

export { InstanceChangeRefused as ProviderChangeRefused, type ChangeContext } from '../lib/instance-admin.js';

/**
 * Changes to runtime trust providers (admin API and CLI): validated with the plugin's schema and
 * against the live set (no two instances may claim one issuer and audience), audited, and never
 * holding a secret (trust providers verify with public keys; a reference is all they may name).
 */
export function createProviderAdmin(deps: { providers: ProviderSet; db: Db; audit: Pick<AuditLog, 'append'> }) {
  return createInstanceAdmin({
    kind: 'trust provider',
    auditAction: 'admin.trust-provider',
    auditFields: (name) => ({ providerName: name }),
    set: { ...deps.providers, checkFits: (name, c) => deps.providers.checkFits({ name, type: c.type, config: c.config }) },
    table: deps.db.trustProvider as unknown as InstanceTable,
    audit: deps.audit,
    prepare(_name, config) {
      const secrets = inlineSecretPaths(config);
      if (secrets.length) throw new InstanceChangeRefused(400, 'invalid trust provider', `${secrets.join(', ')}: send secrets by reference (fromEnv / fromFile), never inline`);
      return config;
    },
  });
}
export type ProviderAdmin = ReturnType<typeof createProviderAdmin>;
