import type { CallContext, VerifiedIdentity } from '../core/types.js';
import { StsError } from '../errors/sts-errors.js';
import type { Logger } from '../log/logger.js';
import { TOKEN_TYPE } from '../lib/urns.js';
import type { BearerAuth } from './bearer-auth.js';
import { bearerToken } from './bearer-auth.js';

export type Role = 'admin' | 'auditor';

export interface RoleMapping {
  role: Role;
  provider: string;
  subjectPattern?: string;
  attributes: Record<string, string | string[]>;
  groups?: string[];
}

export type RoleCheck =
  | { ok: true; principal: string; via: 'bootstrap' | 'provider'; /** A person's groups (provider principals of people only). */ groups?: string[] }
  /** 401: no credential or one that does not verify; 403: a verified identity without the role. */
  | { ok: false; status: 401 | 403; detail: string };

/**
 * Secretless roles for the admin and auditor APIs. A caller presents, as a Bearer token, an
 * attestation JWT from a trust provider of the config file (a CI workflow token of the platform
 * repository, a person's IdP token); it is verified like any exchange and matched against the
 * role mappings. Static bootstrap tokens (`auth.admins` / `auth.auditors`) still work until they
 * are removed or disabled, and show up as `bootstrap:<name>` in the audit log.
 */
export function createRoleAuth(deps: {
  bootstrap: Record<Role, BearerAuth>;
  mappings: RoleMapping[];
  trust: { resolveFor(token: string, tokenType: string): { name: string; verify(i: { token: string; tokenType: string }, ctx: CallContext): Promise<VerifiedIdentity> } };
  logger: Logger;
}) {
  const compiled = deps.mappings.map((m) => ({ ...m, re: m.subjectPattern ? new RegExp(`^(?:${m.subjectPattern})$`) : undefined }));

  function holds(role: Role, provider: string, id: VerifiedIdentity): boolean {
    return compiled.some((m) => {
      if (m.role !== role || m.provider !== provider) return false;
      if (m.re && !m.re.test(id.subject)) return false;
      if (id.kind === 'workload') {
        if (m.groups) return false;
        return Object.entries(m.attributes).every(([k, want]) => (Array.isArray(want) ? want : [want]).includes(id.attributes[k] ?? '\u0000'));
      }
      if (Object.keys(m.attributes).length) return false;
      return !m.groups || m.groups.some((g) => id.groups.includes(g));
    });
  }

  return {
    /**
     * Whether the caller holds `role` (or any of several roles: the credential is verified once,
     * which matters for single-use attestations such as signed AWS requests).
     */
    async check(authorization: string | undefined, role: Role | readonly Role[], ctx: CallContext): Promise<RoleCheck> {
      const roles: readonly Role[] = typeof role === 'string' ? [role] : role;
      const named = roles.join(' or ');
      for (const r of roles) {
        const name = deps.bootstrap[r].authenticate(authorization);
        if (name) return { ok: true, principal: `bootstrap:${name}`, via: 'bootstrap' };
      }
      const token = bearerToken(authorization);
      if (!token || token.split('.').length !== 3) return { ok: false, status: 401, detail: `an ${named} credential is required` };
      let provider: string;
      let id: VerifiedIdentity;
      try {
        const p = deps.trust.resolveFor(token, TOKEN_TYPE.jwt);
        provider = p.name;
        id = await p.verify({ token, tokenType: TOKEN_TYPE.jwt }, ctx);
      } catch (e) {
        deps.logger.info({ requestId: ctx.requestId, role: named, reason: e instanceof StsError ? e.detail : (e as Error).message }, 'role credential refused');
        return { ok: false, status: 401, detail: 'the credential could not be verified' };
      }
      if (!roles.some((r) => holds(r, provider, id))) return { ok: false, status: 403, detail: `this identity does not hold the ${named} role` };
      return { ok: true, principal: `${provider}:${id.subject}`, via: 'provider', ...(id.kind === 'human' ? { groups: id.groups } : {}) };
    },
  };
}
export type RoleAuth = ReturnType<typeof createRoleAuth>;
