import { describe, expect, it } from 'vitest';
import { createRoleAuth } from './role-auth.js';
import { createBearerAuth } from './bearer-auth.js';
import { createLogger } from '../log/logger.js';
import type { VerifiedIdentity } from '../core/types.js';

describe('role auth with several acceptable roles', () => {
  // A provider whose attestations are single use (like signed AWS requests): a second verification fails.
  let verifications = 0;
  const seen = new Set<string>();
  const auth = createRoleAuth({
    bootstrap: { admin: createBearerAuth([]), auditor: createBearerAuth([]) },
    mappings: [{ role: 'admin', provider: 'aws', subjectPattern: 'aws://ops', attributes: {} }],
    logger: createLogger({ level: 'silent' }),
    trust: {
      resolveFor: () => ({
        name: 'aws',
        async verify({ token }) {
          verifications++;
          if (seen.has(token)) throw new Error('replayed');
          seen.add(token);
          return { kind: 'workload', provider: 'aws', providerType: 'aws-iam', subject: 'aws://ops', attributes: {}, claims: {}, expiresAt: new Date(Date.now() + 60_000) } as VerifiedIdentity;
        },
      }),
    },
  });
  const ctx = { requestId: 'r', now: new Date() };

  it('verifies the credential once and accepts any of the roles it holds', async () => {
    verifications = 0;
    const r = await auth.check('Bearer a.b.c', ['auditor', 'admin'], ctx);
    expect(r).toMatchObject({ ok: true, principal: 'aws:aws://ops' });
    expect(verifications).toBe(1);
  });

  it('refuses with 403 naming the roles when it holds none of them', async () => {
    const r = await auth.check('Bearer d.e.f', ['auditor'], ctx);
    expect(r).toEqual({ ok: false, status: 403, detail: 'this identity does not hold the auditor role' });
    expect(await auth.check(undefined, ['auditor', 'admin'], ctx)).toEqual({ ok: false, status: 401, detail: 'an auditor or admin credential is required' });
  });
});
