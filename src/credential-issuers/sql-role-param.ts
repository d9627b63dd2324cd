import type { z } from 'zod';
import type { GrantRequirements } from './credential-issuer.js';
import { unknownParams } from './grant-params.js';

/**
 * The one scope parameter the SQL issuers (postgres, mysql) take: `role`, the role the login joins
 * for that scope, which must be one of the roles the issuer's configuration allows for the scope
 * (`allowedRoles`). The policy chooses among them; it can never name a role the issuer does not
 * list. SQL logins carry no session tags.
 */
export function sqlRoleParamProblems(type: string, grant: GrantRequirements, allowedRoles: (scope: string) => readonly string[]): string[] {
  const problems: string[] = [];
  for (const [scope, params] of grant.scopes) {
    const unknown = unknownParams(scope, params, ['role'], `${type} issuers take only role: one of the roles its grantableRoles allow for the scope`);
    if (unknown) problems.push(unknown);
    if (params.role === undefined) continue;
    const allowed = allowedRoles(scope);
    if (!allowed.length) problems.push(`scope ${scope}: this issuer has no role for it, so the role parameter has nothing to choose from`);
    else if (!allowed.includes(params.role))
      problems.push(`scope ${scope}: role ${JSON.stringify(params.role)} is not allowed for this scope (the issuer allows: ${allowed.join(', ')}; add it to the issuer's grantableRoles to allow it)`);
  }
  if (grant.sessionTags && Object.keys(grant.sessionTags).length) problems.push(`${type} issuers cannot carry session tags (obligations.sessionTags)`);
  return problems;
}

/**
 * zod refinement of a SQL issuer's config: every scope in `grantableRoles` must also have its
 * default in `defaultsKey` (postgres `roles`, mysql `grants`; `what`: one such default, for the
 * message), so a grant without a `role` parameter always has something to issue.
 */
export function grantableRolesNeedDefaults<K extends string>(defaultsKey: K, what: string) {
  return (c: { grantableRoles: Record<string, unknown> } & Record<K, Record<string, unknown>>, ctx: z.RefinementCtx): void => {
    for (const scope of Object.keys(c.grantableRoles))
      if (!Object.hasOwn(c[defaultsKey], scope))
        ctx.addIssue({ code: 'custom', path: ['grantableRoles', scope], message: `scope ${scope} is not in ${defaultsKey} (give it its default ${what} there)` });
  };
}
