import { describe, expect, it } from 'vitest';
import { createPolicyEngine } from '../policy/policy-engine.js';
import { grantPairs, unusedGrants, usesFromRows, type GrantPair } from './identity-analysis.js';

const NOW = new Date('2026-11-25T12:00:00Z');
const DAY = 86_400_000;

/** Several rules in two documents and one v1 rule: conditions, a person requirement, approval, a scope-less grant, a human rule. */
const engine = createPolicyEngine(
  {
    rules: [{ id: 'legacy', workload: { subject: 'test://legacy-bot' }, grants: [{ target: 'reports', scopes: ['read'] }] }],
    documents: [
      {
        apiVersion: 'agent-sts.dev/v2',
        kind: 'Policy',
        metadata: { name: 'billing', owners: ['billing@example.com'] },
        spec: {
          rules: [
            { name: 'agents', workloads: [{ provider: 'ci', subjectPattern: 'test://billing-.+' }], grants: [{ target: 'billing-api', scopes: ['invoices:read', 'invoices:write'] }, { target: 'reports', scopes: ['read', 'export'] }] },
            { name: 'pay', workloads: [{ provider: 'ci', subject: 'test://billing-bot', attributes: { env: 'prod' } }], grants: [{ target: 'payouts', scopes: ['pay'], obligations: { approval: { approvers: ['cfo'], window: '15m' } } }] },
            { name: 'for-people', workloads: [{ provider: 'ci', subjectPattern: 'test://billing-.+' }], human: 'required', grants: [{ target: 'ledger', scopes: ['write'] }] },
          ],
        },
      },
      {
        apiVersion: 'agent-sts.dev/v2',
        kind: 'Policy',
        metadata: { name: 'ops', owners: ['ops@example.com', 'sre@example.com'] },
        spec: {
          rules: [
            { name: 'vpn', workloads: [{ subjectPattern: 'test://.*' }], grants: [{ target: 'vpn-api', scopes: ['read'], when: 'inNetwork(env.clientAddress, "10.0.0.0/8")' }] },
            { name: 'metrics', workloads: [{ subject: 'test://legacy-bot' }], grants: [{ target: 'metrics' }] },
            { name: 'people', humans: [{ groups: ['sre'] }], grants: [{ target: 'ledger', scopes: ['write'] }] },
          ],
        },
      },
    ],
  },
  { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 900 },
);

const workload = (subject: string, attributes: Record<string, string> = {}) => ({
  kind: 'workload', subject, providerName: 'ci', attributes: JSON.stringify({ providerType: 'oidc', attributes }),
});
const brief = (pairs: GrantPair[]) => pairs.map((p) => `${p.target} ${p.scope ?? '-'} ${p.rules.join('+')}${p.requires ? ` [${p.requires}]` : ''}${p.approval ? ' [approval]' : ''}`).sort();

describe('blast radius (grantPairs)', () => {
  it('lists every target and scope a workload can obtain, with every rule, conditions and person-only grants apart', () => {
    const pairs = grantPairs(engine, workload('test://billing-bot', { env: 'prod' }), { now: NOW, detail: true });
    expect(brief(pairs)).toEqual([
      'billing-api invoices:read billing/agents',
      'billing-api invoices:write billing/agents',
      'ledger write billing/for-people [person]',
      'payouts pay billing/pay [approval]',
      'reports export billing/agents',
      'reports read billing/agents',
      'vpn-api read ops/vpn [condition]',
    ]);
    expect(pairs.find((p) => p.target === 'billing-api')!.owners).toEqual(['billing@example.com']);
    expect(pairs.find((p) => p.target === 'vpn-api')!.note).toContain('inNetwork');
  });

  it('follows the attributes the identity was last seen with (no payouts without env=prod)', () => {
    const pairs = grantPairs(engine, workload('test://billing-bot', { env: 'dev' }), { now: NOW, detail: true });
    expect(brief(pairs).some((p) => p.startsWith('payouts'))).toBe(false);
  });

  it('names every rule that allows a pair, across v1 and v2 rules, and scope-less grants', () => {
    const pairs = grantPairs(engine, workload('test://legacy-bot'), { now: NOW, detail: true });
    expect(brief(pairs)).toEqual(['metrics - ops/metrics', 'reports read legacy', 'vpn-api read ops/vpn [condition]']);
    expect(pairs.find((p) => p.target === 'reports')!.owners).toEqual([]);
  });

  it('without detail, decides each pair once (the deciding rule) and leaves conditional grants out', () => {
    const pairs = grantPairs(engine, workload('test://billing-bot', { env: 'prod' }), { now: NOW, detail: false });
    expect(brief(pairs)).toEqual([
      'billing-api invoices:read billing/agents',
      'billing-api invoices:write billing/agents',
      'payouts pay billing/pay [approval]',
      'reports export billing/agents',
      'reports read billing/agents',
    ]);
    expect(brief(grantPairs(engine, workload('test://billing-bot'), { now: NOW, detail: false, target: 'reports' }))).toEqual(['reports export billing/agents', 'reports read billing/agents']);
  });

  it('gives a person what human rules allow them, and nothing to a stranger', () => {
    const alice = { kind: 'human', subject: 'alice', providerName: 'idp', attributes: JSON.stringify({ issuer: 'https://idp', groups: ['sre'], roles: [] }) };
    expect(brief(grantPairs(engine, alice, { now: NOW, detail: true }))).toEqual(['ledger write ops/people']);
    expect(grantPairs(engine, { ...alice, attributes: JSON.stringify({ groups: ['sales'] }) }, { now: NOW, detail: true })).toEqual([]);
    expect(grantPairs(engine, workload('spiffe://elsewhere/bot'), { now: NOW, detail: true })).toEqual([]);
  });
});

describe('unusedGrants', () => {
  const pairs = grantPairs(engine, workload('test://billing-bot', { env: 'prod' }), { now: NOW, detail: true });
  const uses = usesFromRows([
    {
      subject: 'test://billing-bot', target: 'billing-api', firstUsedAt: new Date(NOW.getTime() - 60 * DAY), lastUsedAt: new Date(NOW.getTime() - DAY), uses: 12,
      scopes: JSON.stringify([{ scope: 'invoices:read', lastUsedAt: new Date(NOW.getTime() - DAY).toISOString() }, { scope: 'invoices:write', lastUsedAt: new Date(NOW.getTime() - 45 * DAY).toISOString() }]),
    },
  ]);
  const since = new Date(NOW.getTime() - 30 * DAY);

  it('recommends removing every held grant not used in the period, naming target, scope and rule', () => {
    const r = unusedGrants(pairs, uses, new Date(NOW.getTime() - 90 * DAY), since);
    expect(r.map((x) => x.text).sort()).toEqual([
      'remove target billing-api scope invoices:write from rule billing/agents',
      'remove target payouts scope pay from rule billing/pay',
      'remove target reports scope export from rule billing/agents',
      'remove target reports scope read from rule billing/agents',
    ]);
    expect(r.find((x) => x.scope === 'invoices:write')!.lastUsedAt).toBe(new Date(NOW.getTime() - 45 * DAY).toISOString());
  });

  it('recommends nothing for an identity first seen within the period', () => {
    expect(unusedGrants(pairs, uses, new Date(NOW.getTime() - 10 * DAY), since)).toEqual([]);
  });
});
