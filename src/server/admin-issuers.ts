import type { FastifyRequest } from 'fastify';
import type { CallContext } from '../core/types.js';
import type { IssuerSet } from '../credential-issuers/issuer-set.js';
import type { InstanceAdmin } from '../lib/instance-admin.js';
import type { RoleAuth } from './role-auth.js';
import { registerInstanceRoutes, type AdminApp } from './admin-instances.js';

/**
 * `/v1/admin/credential-issuers`: runtime credential issuers. Secrets are given once as
 * `{"seal": "..."}` and stored sealed under the key-encryption key for that one issuer; answers
 * carry only the sealed envelope (ciphertext), which an update may send back unchanged. A runtime
 * issuer's answers also carry `policy_problems`: what the policy in force asks of it that it
 * cannot give (checked as start-up checks the config file's issuers; empty when none).
 */
export function registerIssuerAdmin(
  app: AdminApp,
  deps: {
    roles: RoleAuth;
    issuers: IssuerSet;
    admin: InstanceAdmin;
    ctxOf: (req: FastifyRequest) => CallContext;
    policyProblems?: (issuer: { name: string; type: string; config: unknown }) => string[];
  },
) {
  registerInstanceRoutes(app, deps, {
    base: '/v1/admin/credential-issuers',
    listKey: 'credential_issuers',
    kind: 'credential issuer',
    records: deps.issuers.records,
    record: deps.issuers.record,
    extra: (r) => {
      const i = deps.issuers.get(r.name);
      return {
        ...(i ? { capabilities: i.capabilities } : {}),
        ...(r.source === 'api' && deps.policyProblems ? { policy_problems: deps.policyProblems({ name: r.name, type: r.type, config: r.config }) } : {}),
      };
    },
    admin: deps.admin,
  });
}
