import { describe, expect, it, vi } from 'vitest';
import type { BlendedIdentity } from '../core/types.js';
import type { LoadedDocument, PolicyDocument } from './policy-document.js';
import { literalPrefix } from './policy-index.js';
import { createPolicyEngine, type PolicyRequest } from './policy-engine.js';
import * as match from './policy-match.js';

// Count the rules a decision checks: the index (and the bound on explanations) must keep it small
// whatever the size of the policy set.
vi.mock('./policy-match.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('./policy-match.js')>();
  return { ...real, checkAgentRule: vi.fn(real.checkAgentRule) };
});
const checks = vi.mocked(match.checkAgentRule);

describe('literal prefixes of subject patterns', () => {
  it('stops at the first thing that is not a required literal', () => {
    expect(literalPrefix('dev://team-a/.+')).toBe('dev://team-a/');
    expect(literalPrefix('github://acme/app@refs/heads/.*')).toBe('github://acme/app@refs/heads/');
    expect(literalPrefix('k8s://prod/ns/payments\\.v2/sa/[a-z]+')).toBe('k8s://prod/ns/payments.v2/sa/');
    expect(literalPrefix('ab?c')).toBe('a');
    expect(literalPrefix('ab*c')).toBe('a');
    expect(literalPrefix('ab{2}')).toBe('a');
    expect(literalPrefix('ab+c')).toBe('ab');
    expect(literalPrefix('x(a|b)y')).toBe('x');
    expect(literalPrefix('a|b')).toBe('');
    expect(literalPrefix('(a)|b')).toBe('');
    expect(literalPrefix('[ab]c')).toBe('');
    expect(literalPrefix('\\d+x')).toBe('');
    expect(literalPrefix('^abc')).toBe('');
  });

  it('never excludes a subject the pattern matches', () => {
    const patterns = ['dev://team-a/.+', 'a[|]b.*', 'x(a|b)y', 'ab?c+', 'dev://(?:a|b)/x', 'p\\.q\\/r.*', 'a\\|b', 'lit-eral', 'é+x'];
    const subjects = ['dev://team-a/x', 'a|bzz', 'xay', 'xby', 'ac', 'abcc', 'dev://a/x', 'dev://b/x', 'p.q/rrr', 'a|b', 'lit-eral', 'éééx', 'ééx'];
    for (const p of patterns) {
      const re = new RegExp(`^(?:${p})$`);
      for (const s of subjects) if (re.test(s)) expect(s.startsWith(literalPrefix(p)), `${p} / ${s}`).toBe(true);
    }
  });
});

function engineWith(n: number) {
  const rules: PolicyDocument['spec']['rules'] = [];
  for (let i = 0; i < n; i++) {
    // every rule grants the same target: exact subjects, and patterns of one trust provider
    rules.push(i % 2 ? { name: `r${i}`, workloads: [{ provider: 'p', subjectPattern: `dev://team-${i}/.+` }], grants: [{ target: 'db', scopes: ['read'] }] } : { name: `r${i}`, workloads: [{ subject: `dev://team-${i}/agent` }], grants: [{ target: 'db', scopes: ['read'] }] });
  }
  const doc: PolicyDocument = { apiVersion: 'agent-sts.dev/v2', kind: 'Policy', metadata: { name: 'many', owners: ['t'] }, spec: { rules } };
  const documents: LoadedDocument[] = [{ doc, where: (p) => p.join('.') }];
  return createPolicyEngine({ rules: [] }, { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900, documents });
}
const wl = (subject: string, provider = 'p'): BlendedIdentity => ({ workload: { kind: 'workload', provider, providerType: 'oidc', subject, attributes: {}, claims: {}, expiresAt: new Date() }, priorActors: [] });
const read = (scopes = ['read']): PolicyRequest => ({ kind: 'credential', target: 'db', scopes });

function rulesChecked(engine: ReturnType<typeof engineWith>, id: BlendedIdentity, req: PolicyRequest) {
  checks.mockClear();
  const d = engine.evaluate(id, req);
  return { d, n: checks.mock.calls.length };
}

describe('decision cost as the set grows', () => {
  const small = engineWith(10);
  const large = engineWith(5000);

  it('an allow checks the same few rules with 10 or 5,000 rules (the pattern rule found by its prefix)', () => {
    const a = rulesChecked(small, wl('dev://team-7/x'), read());
    const b = rulesChecked(large, wl('dev://team-4001/x'), read());
    expect(a.d).toMatchObject({ allow: true, policyId: 'many/r7' });
    expect(b.d).toMatchObject({ allow: true, policyId: 'many/r4001' });
    expect(a.n).toBe(1);
    expect(b.n).toBe(1);
  });

  it('a denial checks a bounded number of rules, and still names the rule that came closest', () => {
    const a = rulesChecked(small, wl('dev://team-7/x'), read(['write']));
    const b = rulesChecked(large, wl('dev://team-4001/x'), read(['write']));
    expect(b.d).toMatchObject({ allow: false, denial: 'scope', policyId: 'many/r4001' });
    expect(b.d.reasons[0]).toContain('scope not granted by this rule: write');
    expect(a.d).toMatchObject({ allow: false, denial: 'scope', policyId: 'many/r7' });
    expect(b.n).toBeLessThanOrEqual(40);
    expect(b.n).toBeLessThanOrEqual(a.n + 30);
    const stranger = rulesChecked(large, wl('dev://nobody', 'other'), read());
    expect(stranger.d).toMatchObject({ allow: false, denial: 'identity' });
    expect(stranger.n).toBeLessThanOrEqual(40);
  });

  it('explain still checks every rule', () => {
    expect(large.explain(wl('dev://nobody', 'other'), read()).rules).toHaveLength(5000);
  });
});
