import { randomBytes } from 'node:crypto';
import type { Logger } from '../../src/log/logger.js';
import type { CredentialIssuer, IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { secretResolverFor } from '../../src/config/secret-ref.js';
import { systemClock } from '../../src/lib/clock.js';

/** A key-encryption key for tests that seal issuer secrets. */
export const TEST_KEK = randomBytes(32);

/** Dependencies of an issuer instance built outside the server (plugin-level tests, bench). */
export function testIssuerDeps(logger: Logger, env: NodeJS.ProcessEnv = {}, name = 'test-issuer'): IssuerDeps {
  return { logger, clock: systemClock, signer: {} as IssuerDeps['signer'], issuerUrl: 'https://sts.test.invalid', env, secret: secretResolverFor(name, env, () => TEST_KEK) };
}

/**
 * Holds a live issuer's upstream call: issue() waits at the gate until `release()`, then does what
 * it always does (a slow target, without touching the SDK or the target). `atTarget` resolves when a
 * call reached the gate; `handles` collects the revocation handle of each credential it created.
 * `restore()` puts the issuer back (and releases).
 */
export function holdIssuance(issuer: CredentialIssuer) {
  const original = issuer.issue;
  let reached!: () => void;
  const atTarget = new Promise<void>((r) => (reached = r));
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const handles: unknown[] = [];
  issuer.issue = async (req, ctx) => {
    reached();
    await gate;
    const c = await original.call(issuer, req, ctx);
    handles.push(c.revocationHandle);
    return c;
  };
  return {
    atTarget,
    release,
    handles,
    restore: () => {
      issuer.issue = original;
      release();
    },
  };
}
