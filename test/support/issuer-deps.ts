import { randomBytes } from 'node:crypto';
import type { Logger } from '../../src/log/logger.js';
import type { IssuerDeps } from '../../src/credential-issuers/credential-issuer.js';
import { secretResolverFor } from '../../src/config/secret-ref.js';
import { systemClock } from '../../src/lib/clock.js';

/** A key-encryption key for tests that seal issuer secrets. */
export const TEST_KEK = randomBytes(32);

/** Dependencies of an issuer instance built outside the server (plugin-level tests, bench). */
export function testIssuerDeps(logger: Logger, env: NodeJS.ProcessEnv = {}, name = 'test-issuer'): IssuerDeps {
  return { logger, clock: systemClock, signer: {} as IssuerDeps['signer'], issuerUrl: 'https://sts.test.invalid', env, secret: secretResolverFor(name, env, () => TEST_KEK) };
}
