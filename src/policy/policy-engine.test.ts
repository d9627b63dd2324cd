import { describe, expect, it } from 'vitest';
import { createPolicyEngine } from './policy-engine.js';
import { PolicySchema } from './policy-schema.js';
import type { BlendedIdentity } from '../core/types.js';

const policy = PolicySchema.parse({
  rules: [
    {
      id: 'ci',
      workload: { provider: 'gh', attributes: { repository_id: '42', ref: ['refs/heads/main', 'refs/heads/release'] } },
      grants: [{ target: 'db', scopes: ['read', 'write'], maxTtl: '10m' }],
    },
    { id: 'agents', workload: { subjectPattern: 'dev://team-a/.+' }, agentToken: { maxTtl: '2h' }, grants: [{ target: 'api', scopes: ['read'] }] },
    { id: 'prod', workload: { subject: 'dev://team-a/bot' }, human: { presence: 'required', groups: ['sre'] }, grants: [{ target: 'prod', scopes: ['deploy'], maxTtl: '1m' }] },
  ],
});
const engine = createPolicyEngine(policy, { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900 });

const wl = (subject: string, attributes: Record<string, string> = {}, provider = 'dev', providerType = 'oidc'): BlendedIdentity => ({
  workload: { kind: 'workload', provider, providerType, subject, attributes, claims: {}, expiresAt: new Date() },
  priorActors: [],
});
const gh = (attributes: Record<string, string>) => wl('github://acme/app@refs/heads/main', attributes, 'gh', 'github-actions');

describe('policy engine v1', () => {
  it('denies by default when no rule exists', () => {
    const d = createPolicyEngine({ rules: [] }, { agentTokenMaxTtl: 60, accessTokenMaxTtl: 60 }).evaluate(wl('dev://x'), { kind: 'agent-token' });
    expect(d).toMatchObject({ allow: false, denial: 'identity', reasons: ['no policy rule exists'] });
  });

  it('allows a pinned GitHub workflow and caps the TTL by the grant', () => {
    const d = engine.evaluate(gh({ repository_id: '42', ref: 'refs/heads/main' }), { kind: 'credential', target: 'db', scopes: ['read'] });
    expect(d).toMatchObject({ allow: true, policyId: 'ci', grantedScopes: ['read'], ttlCapSeconds: 600 });
    expect(d.policyVersion).toMatch(/^sha256:[0-9a-f]{16}$/);
  });

  it('refuses a repository id that differs, naming the closest rule', () => {
    const d = engine.evaluate(gh({ repository_id: '43', ref: 'refs/heads/main' }), { kind: 'credential', target: 'db', scopes: ['read'] });
    expect(d.allow).toBe(false);
    expect(d.denial).toBe('identity');
    expect(d.reasons[0]).toContain('repository_id');
  });

  it('refuses a github-actions workload matched only by names (no immutable pin)', () => {
    const p = createPolicyEngine(PolicySchema.parse({ rules: [{ id: 'names', workload: { subjectPattern: 'github://acme/.*' }, grants: [{ target: 'db', scopes: ['read'] }] }] }), { agentTokenMaxTtl: 60, accessTokenMaxTtl: 60 });
    const d = p.evaluate(gh({ repository_id: '42' }), { kind: 'credential', target: 'db', scopes: ['read'] });
    expect(d.allow).toBe(false);
    expect(d.reasons[0]).toContain('names alone are not trusted');
  });

  it('grants all scopes of the grant when none are requested', () => {
    const d = engine.evaluate(gh({ repository_id: '42', ref: 'refs/heads/release' }), { kind: 'credential', target: 'db', scopes: [] });
    expect(d.grantedScopes).toEqual(['read', 'write']);
  });

  it('says target when the identity matches but the target is not granted', () => {
    expect(engine.evaluate(wl('dev://team-a/x'), { kind: 'credential', target: 'db', scopes: [] }).denial).toBe('target');
  });

  it('says scope when the target is granted but not the scope', () => {
    const d = engine.evaluate(wl('dev://team-a/x'), { kind: 'credential', target: 'api', scopes: ['read', 'write'] });
    expect(d).toMatchObject({ allow: false, denial: 'scope' });
  });

  it('anchors subject patterns', () => {
    expect(engine.evaluate(wl('evil-dev://team-a/x'), { kind: 'agent-token' }).allow).toBe(false);
    expect(engine.evaluate(wl('dev://team-a/x'), { kind: 'agent-token' })).toMatchObject({ allow: true, ttlCapSeconds: 3600 });
  });

  it('requires a human in the right group where the rule says so', () => {
    const id = wl('dev://team-a/bot');
    expect(engine.evaluate(id, { kind: 'credential', target: 'prod', scopes: ['deploy'] })).toMatchObject({ allow: false, denial: 'human' });
    const human = { kind: 'human' as const, provider: 'idp', issuer: 'https://idp', subject: 'alice', groups: ['dev'], roles: [], expiresAt: new Date() };
    expect(engine.evaluate({ ...id, human }, { kind: 'credential', target: 'prod', scopes: ['deploy'] }).allow).toBe(false);
    expect(engine.evaluate({ ...id, human: { ...human, groups: ['sre'] } }, { kind: 'credential', target: 'prod', scopes: ['deploy'] })).toMatchObject({ allow: true, ttlCapSeconds: 60 });
  });
});

describe('policy engine: scope parameters and tags named like Object members', () => {
  it('merges them as data (no prototype lookups)', () => {
    const docs = PolicySchema.parse({
      documents: [
        {
          apiVersion: 'agent-sts.dev/v2', kind: 'Policy', metadata: { name: 'odd', owners: ['o'] },
          spec: {
            rules: [
              { name: 'agent', workloads: [{ subject: 'dev://bot' }], grants: [{ target: 'db', scopes: [{ name: 'constructor', params: { toString: 'a,b', __proto__x: 'y' } }], obligations: { sessionTags: { constructor: 'c' } } }] },
              { name: 'people', humans: [{ subject: 'alice' }], grants: [{ target: 'db', scopes: [{ name: 'constructor', params: { toString: 'b' } }] }] },
            ],
          },
        },
      ],
    });
    const e = createPolicyEngine(docs, { agentTokenMaxTtl: 60, accessTokenMaxTtl: 60 });
    const human = { kind: 'human' as const, provider: 'idp', issuer: 'https://idp', subject: 'alice', groups: [], roles: [], expiresAt: new Date() };
    const d = e.evaluate({ ...wl('dev://bot'), human }, { kind: 'credential', target: 'db', scopes: ['constructor'] });
    expect(d).toMatchObject({ allow: true, obligations: { sessionTags: { constructor: 'c' } } });
    expect(d.scopeParams).toEqual({ constructor: { toString: 'b', __proto__x: 'y' } });
    expect(Object.hasOwn(d.scopeParams!, 'constructor')).toBe(true);
  });
});

describe('policy engine: a permissions parameter intersects by level only in the name:level shape', () => {
  const human = { kind: 'human' as const, provider: 'idp', issuer: 'https://idp', subject: 'alice', groups: [], roles: [], expiresAt: new Date() };
  const decide = (agent: Record<string, string>, person: Record<string, string>) => {
    const docs = PolicySchema.parse({
      documents: [
        {
          apiVersion: 'agent-sts.dev/v2', kind: 'Policy', metadata: { name: 'gh', owners: ['o'] },
          spec: {
            rules: [
              { name: 'agent', workloads: [{ subject: 'dev://bot' }], grants: [{ target: 'gh', scopes: [{ name: 'code', params: agent }] }] },
              { name: 'people', humans: [{ subject: 'alice' }], grants: [{ target: 'gh', scopes: [{ name: 'code', params: person }] }] },
            ],
          },
        },
      ],
    });
    return createPolicyEngine(docs, { agentTokenMaxTtl: 60, accessTokenMaxTtl: 60 }).evaluate({ ...wl('dev://bot'), human }, { kind: 'credential', target: 'gh', scopes: ['code'] });
  };

  it('takes the weaker level per name, in the agent\'s order; a name listed twice counts at its higher level', () => {
    const d = decide({ permissions: 'contents:admin,contents:read,issues:write,actions:read' }, { permissions: 'issues:admin,contents:write' });
    expect(d).toMatchObject({ allow: true, scopeParams: { code: { permissions: 'contents:write,issues:write' } } });
  });

  it('only for the permissions parameter: another parameter compares its items as strings', () => {
    expect(decide({ other: 'contents:write' }, { other: 'contents:read' })).toMatchObject({ allow: false, denial: 'scope' });
    expect(decide({ permissions: 'contents:write' }, { permissions: 'contents:read' })).toMatchObject({ allow: true, scopeParams: { code: { permissions: 'contents:read' } } });
  });

  it('an item outside the shape on either side: string items for that pair', () => {
    expect(decide({ permissions: 'contents:write,custom' }, { permissions: 'contents:read,custom' })).toMatchObject({ allow: true, scopeParams: { code: { permissions: 'custom' } } });
    expect(decide({ permissions: 'contents:write' }, { permissions: 'contents:superuser' })).toMatchObject({ allow: false, denial: 'scope' });
  });
});
