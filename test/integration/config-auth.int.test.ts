// The configuration keys added for secretless admin roles, runtime providers and DPoP: every bad value
// is refused at load time with the path of the problem (the same text `config check` prints).
import { describe, expect, it } from 'vitest';
import { configProblems } from '../support/config.js';

const base = {
  keys: { kek: { insecureValue: 'x'.repeat(44) } },
  trustProviders: [{ name: 'platform', type: 'oidc', config: { issuer: 'https://ci.test', audience: 'agent-sts-admin' } }],
};

const problems = (extra: Record<string, unknown>) => configProblems({ ...base, ...extra });

describe('auth.roles and server.providerReloadInterval', () => {
  it('accepts a mapping on a config-file provider and a disabled bootstrap admin', () => {
    expect(
      problems({
        server: { providerReloadInterval: '5s' },
        auth: { roles: [{ role: 'admin', provider: 'platform', subjectPattern: 'oidc://ci.test/deploy-bot' }], admins: [{ name: 'boot', tokenSha256: 'a'.repeat(64), disabled: true }] },
      }),
    ).toEqual([]);
  });

  it.each([
    ['a provider not declared in the file', { roles: [{ role: 'admin', provider: 'registered-at-runtime', subjectPattern: 'x' }] }, /auth\.roles\[0\]\.provider: no trust provider named "registered-at-runtime" in this file/],
    ['a mapping that would make a whole provider admin', { roles: [{ role: 'admin', provider: 'platform' }] }, /auth\.roles\[0\]: .*a whole provider is never an admin/],
    ['an invalid subject pattern', { roles: [{ role: 'admin', provider: 'platform', subjectPattern: '(' }] }, /auth\.roles\[0\]\.subjectPattern:/],
    ['an unknown role', { roles: [{ role: 'root', provider: 'platform', subjectPattern: 'x' }] }, /auth\.roles\[0\]\.role: /],
    ['an unknown key in a mapping', { roles: [{ role: 'admin', provider: 'platform', subjectPattern: 'x', everyone: true }] }, /auth\.roles\[0\]: Unrecognized key: "everyone"/],
    ['a non-boolean disabled flag', { admins: [{ name: 'boot', tokenSha256: 'a'.repeat(64), disabled: 'yes' }] }, /auth\.admins\[0\]\.disabled: /],
  ])('refuses %s, naming the path', (_name, auth, expected) => {
    const p = problems({ auth });
    expect(p.join('\n')).toMatch(expected);
  });

  it('refuses a provider reload interval that is not a duration', () => {
    expect(problems({ server: { providerReloadInterval: 'soon' } }).join('\n')).toMatch(/server\.providerReloadInterval/);
  });
});

describe('targets[].issuerRegisteredAtRuntime', () => {
  const issuers = [{ name: 'tokens', type: 'agent-sts-jwt' }];
  const target = (extra: Record<string, unknown>) => ({ name: 'db', audiences: ['db'], scopes: ['read'], ...extra });

  it('a target naming an issuer the file does not declare is refused unless it says the issuer is registered at runtime', () => {
    expect(problems({ credentialIssuers: issuers, targets: [target({ issuer: 'pg-runtime' })] })).toEqual([
      'targets[0] (db).issuer: no credential issuer named "pg-runtime" in this file (if it is registered through the admin API, set issuerRegisteredAtRuntime: true)',
    ]);
    expect(problems({ credentialIssuers: issuers, targets: [target({ issuer: 'pg-runtime', issuerRegisteredAtRuntime: true })] })).toEqual([]);
  });

  it('refuses the flag on an issuer of the file, and a non-boolean value', () => {
    expect(problems({ credentialIssuers: issuers, targets: [target({ issuer: 'tokens', issuerRegisteredAtRuntime: true })] })).toEqual([
      'targets[0] (db).issuerRegisteredAtRuntime: "tokens" is declared in this file',
    ]);
    expect(problems({ credentialIssuers: issuers, targets: [target({ issuer: 'tokens', issuerRegisteredAtRuntime: 'yes' })] })).toEqual([
      'targets[0].issuerRegisteredAtRuntime: Invalid input: expected boolean, received string',
    ]);
  });
});

describe.each(['requireDpop', 'dpopNonce'])('tokens.%s', (key) => {
  it('accepts true and false, refuses anything else naming the path', () => {
    expect(problems({ tokens: { [key]: true } })).toEqual([]);
    expect(problems({ tokens: { [key]: false } })).toEqual([]);
    for (const bad of ['yes', 1, null]) expect(problems({ tokens: { [key]: bad } }).join('\n'), String(bad)).toMatch(new RegExp(`tokens\\.${key}: `));
  });
});
