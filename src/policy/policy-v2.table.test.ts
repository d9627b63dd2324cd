import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import type { Actor, BlendedIdentity, Decision, HumanContext } from '../core/types.js';
import type { PolicyEnvironment } from './cel-conditions.js';
import { parsePolicyFile } from './policy-document.js';
import { createPolicyEngine, type PolicyRequest } from './policy-engine.js';
import { PolicySchema } from './policy-schema.js';

// The decision table of policy v2: every row is an identity, a request (and where/when it
// happens), the expected decision and why. Policies: testdata/table-policies.yaml plus two v1 rules.
const FILE = fileURLToPath(new URL('./testdata/table-policies.yaml', import.meta.url));
const loaded = parsePolicyFile(FILE, readFileSync(FILE, 'utf8'));
const v1 = PolicySchema.parse({
  rules: [
    { id: 'legacy', workload: { provider: 'dev', subject: 'dev://legacy/bot' }, human: { presence: 'required', groups: ['ops'] }, grants: [{ target: 'legacy-db', scopes: ['read'], maxTtl: '1m' }] },
    { id: 'legacy-open', workload: { provider: 'dev', subjectPattern: 'dev://legacy/.*' }, agentToken: {}, grants: [{ target: 'legacy-api', scopes: ['read'] }] },
  ],
});
const engine = createPolicyEngine(v1, { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 2400, documents: loaded.documents });

const wl = (subject: string, attributes: Record<string, string> = {}, opts: { provider?: string; providerType?: string; actors?: Actor[]; human?: HumanContext } = {}): BlendedIdentity => ({
  workload: { kind: 'workload', provider: opts.provider ?? 'dev', providerType: opts.providerType ?? 'oidc', subject, attributes, claims: {}, expiresAt: new Date() },
  human: opts.human,
  priorActors: opts.actors ?? [],
});
const gh = (attributes: Record<string, string>, human?: HumanContext) => wl('github://acme/app', attributes, { provider: 'gh', providerType: 'github-actions', human });
const teamA = (human?: HumanContext, actors: Actor[] = []) => wl('dev://team-a/agent', {}, { human, actors });
const teamB = (tier: string | undefined, actors: Actor[] = [], human?: HumanContext) => wl('dev://team-b/agent', tier ? { tier } : {}, { actors, human });
const person = (subject: string, p: Partial<HumanContext> = {}): HumanContext => ({
  kind: 'human', provider: 'idp', issuer: 'https://idp.acme.test', subject, email: `${subject}@acme.test`, groups: [], roles: [], expiresAt: new Date(), ...p,
});
const bob = person('bob', { groups: ['sre'] });
const carol = person('carol', { roles: ['incident-commander'] });
const dave = person('dave', { groups: ['dev'] });
const eve = person('eve', { email: 'eve@evil.test' });
const wendy = person('wendy', { email: 'wendy@elsewhere.test' });
const alice = person('alice', { email: 'alice@partner.test' });
const malice = person('malice', { email: 'malice@evil.test' });
const bobElsewhere = person('bob', { issuer: 'https://other.test', groups: ['sre'] });
const ops = person('olga', { groups: ['ops'], email: 'olga@partner.test' });
const task: Actor = { sub: 'agent-sts:task:t_1', iss: 'https://sts' };
const stranger: Actor = { sub: 'spiffe://other/agent' };

const cred = (target: string, scopes: string[] = [], lifetime?: number): PolicyRequest => ({ kind: 'credential', target, scopes, lifetime });
const token = (lifetime?: number): PolicyRequest => ({ kind: 'agent-token', lifetime });
const TUESDAY_10 = new Date('2026-03-03T10:00:00Z');
const at = (iso: string, clientAddress = '10.1.2.3'): PolicyEnvironment => ({ now: new Date(iso), clientAddress });

interface Row {
  name: string;
  id: BlendedIdentity;
  req: PolicyRequest;
  env?: PolicyEnvironment;
  allow: boolean;
  /** Substring of the joined reasons. */
  reason: string;
  scopes?: string[];
  ttl?: number;
  rules?: Decision['decidingRules'];
  denial?: Decision['denial'];
  obligations?: Decision['obligations'];
  scopeParams?: Decision['scopeParams'];
}

const rows: Row[] = [
  // subjects and attributes
  { name: 'exact subject with pinned attributes', id: gh({ repository_id: '42', ref: 'refs/heads/main' }), req: cred('db', ['read']), allow: true, reason: 'rule team/ci-deploy grants db', scopes: ['read'], ttl: 600, rules: { agent: 'team/ci-deploy' }, obligations: { sessionTags: { team: 'payments' } } },
  { name: 'attribute from a list; all scopes, with parameters', id: gh({ repository_id: '42', ref: 'refs/heads/release' }), req: cred('db'), allow: true, reason: 'team/ci-deploy', scopes: ['read', 'write'], ttl: 600, scopeParams: { write: { schema: 'payments' } } },
  { name: 'a scope without parameters has none', id: gh({ repository_id: '42', ref: 'refs/heads/main' }), req: cred('db', ['read']), allow: true, reason: 'team/ci-deploy', scopeParams: undefined },
  { name: 'other subject', id: wl('github://acme/other', { repository_id: '42', ref: 'refs/heads/main' }, { provider: 'gh', providerType: 'github-actions' }), req: cred('db', ['read']), allow: false, reason: 'closest rule team/ci-deploy: workload subject differs', denial: 'identity' },
  { name: 'other trust provider', id: wl('github://acme/app', { repository_id: '42', ref: 'refs/heads/main' }, { provider: 'gh2', providerType: 'github-actions' }), req: cred('db', ['read']), allow: false, reason: 'trust provider differs', denial: 'identity' },
  { name: 'repository id differs', id: gh({ repository_id: '43', ref: 'refs/heads/main' }), req: cred('db', ['read']), allow: false, reason: 'attribute repository_id does not match', denial: 'identity' },
  { name: 'ref not in the list', id: gh({ repository_id: '42', ref: 'refs/heads/dev' }), req: cred('db', ['read']), allow: false, reason: 'attribute ref does not match' },
  { name: 'required attribute missing', id: gh({ repository_id: '42' }), req: cred('db', ['read']), allow: false, reason: 'attribute ref does not match' },
  { name: 'subject pattern', id: teamA(), req: cred('api', ['read']), allow: true, reason: 'rule team/agents grants api', scopes: ['read'], ttl: 1800 },
  { name: 'subject pattern is anchored at the start', id: wl('evil-dev://team-a/x'), req: cred('api', ['read']), allow: false, reason: 'does not match the pattern', denial: 'identity' },
  { name: 'subject pattern is anchored at the end (.+ needs a name)', id: wl('dev://team-a/'), req: cred('api', ['read']), allow: false, reason: 'does not match the pattern' },
  { name: 'attribute list on a pattern rule', id: teamB('gold'), req: cred('api', ['read']), allow: true, reason: 'team/sub-agents', ttl: 1200 },
  { name: 'attribute value not accepted', id: teamB('bronze'), req: cred('api', ['read']), allow: false, reason: 'attribute tier does not match' },
  { name: 'attribute absent', id: teamB(undefined), req: cred('api', ['read']), allow: false, reason: 'attribute tier does not match' },
  { name: 'a github-actions rule must pin an immutable id (v1 rule without one)', id: wl('dev://legacy/gh', { repository_id: '42' }, { providerType: 'github-actions' }), req: cred('legacy-api', ['read']), allow: false, reason: 'names alone are not trusted' },
  // targets and scopes
  { name: 'scope beyond the grant', id: teamA(), req: cred('api', ['admin']), allow: false, reason: 'scope not granted by this rule: admin', denial: 'scope' },
  { name: 'target no rule grants to this workload', id: teamA(), req: cred('nothing', ['read']), allow: false, reason: 'closest rule team/agents: rule grants nothing for target nothing', denial: 'target' },
  { name: 'target granted to someone else', id: teamA(), req: cred('db', ['read']), allow: false, reason: 'closest rule team/ci-deploy', denial: 'target' },
  // agent tokens
  { name: 'agent token capped by tokens.agentTokenMaxTtl', id: teamA(), req: token(), allow: true, reason: 'rule team/agents allows an agent token', ttl: 3600 },
  { name: 'rule without agentToken (the closest rule is one that allows agent tokens)', id: teamB('gold'), req: token(), allow: false, reason: 'closest rule legacy-open: workload subject does not match the pattern', denial: 'target' },
  { name: 'agent token for an agent acting for a person: both caps, shorter wins', id: teamA(dave), req: token(), allow: true, reason: 'rule team/staff allows dave the same', ttl: 1800, rules: { agent: 'team/agents', human: 'team/staff' } },
  { name: 'agent token for a person no rule knows', id: teamA(eve), req: token(), allow: false, reason: 'no rule allows human eve for an agent token', denial: 'human' },
  // humans: presence
  { name: 'grant requires a person', id: teamA(), req: cred('prod', ['deploy']), allow: false, reason: 'rule requires a human principal for target prod', denial: 'human' },
  { name: 'rule forbids a person', id: gh({ repository_id: '42', ref: 'refs/heads/main' }, dave), req: cred('db', ['read']), allow: false, reason: 'rule forbids acting for a human', denial: 'human' },
  { name: 'grant forbids a person', id: teamA(dave), req: cred('solo', ['read']), allow: false, reason: 'rule forbids acting for a human for target solo', denial: 'human' },
  { name: 'same grant without a person', id: teamA(), req: cred('solo', ['read']), allow: true, reason: 'team/agents', rules: { agent: 'team/agents' } },
  // humans: matching and intersection
  { name: 'person by group: intersection of scopes, shorter TTL', id: teamA(bob), req: cred('prod', ['deploy']), allow: true, reason: 'rule team/sre-humans allows bob the same (intersection)', scopes: ['deploy'], ttl: 120, rules: { agent: 'team/agents', human: 'team/sre-humans' } },
  { name: 'no scope asked: the intersection of both grants', id: teamA(bob), req: cred('prod'), allow: true, reason: 'team/sre-humans', scopes: ['deploy'], ttl: 120 },
  { name: 'scope the agent may have but the person may not', id: teamA(bob), req: cred('prod', ['read']), allow: false, reason: 'no rule allows human bob for prod (both must)', denial: 'scope' },
  { name: 'person by role (second matcher)', id: teamA(carol), req: cred('prod', ['deploy']), allow: true, reason: 'team/sre-humans', ttl: 120 },
  { name: 'person in no matching group or role', id: teamA(eve), req: cred('prod', ['deploy']), allow: false, reason: 'matches none of its 2 human matchers', denial: 'human' },
  { name: 'person from another issuer', id: teamA(bobElsewhere), req: cred('prod', ['deploy']), allow: false, reason: 'human issuer differs' },
  { name: 'person by e-mail domain', id: teamA(dave), req: cred('api'), allow: true, reason: 'team/staff', scopes: ['read', 'write'], ttl: 1800, rules: { agent: 'team/agents', human: 'team/staff' } },
  { name: 'two human rules: the wider intersection wins', id: teamA(bob), req: cred('api'), allow: true, reason: 'team/staff', scopes: ['read', 'write'], ttl: 1800 },
  { name: 'two human rules: the one that covers the scope', id: teamA(bob), req: cred('api', ['write']), allow: true, reason: 'team/staff', scopes: ['write'] },
  { name: 'e-mail domain not allowed', id: teamA(eve), req: cred('api', ['read']), allow: false, reason: 'no rule allows human eve for api', denial: 'human' },
  { name: 'person by subject pattern', id: teamA(alice), req: cred('prod', ['deploy']), allow: true, reason: 'team/alice', ttl: 60 },
  { name: 'human subject pattern is anchored', id: teamA(malice), req: cred('prod', ['deploy']), allow: false, reason: 'no rule allows human malice for prod', denial: 'human' },
  { name: 'human rule alone never yields a credential for an agent', id: wl('dev://unknown/x', {}, { human: bob }), req: cred('prod', ['deploy']), allow: false, reason: 'closest rule team/agents: workload subject does not match the pattern', denial: 'identity' },
  { name: 'pattern rule with attributes, acting for a person', id: teamB('silver', [], dave), req: cred('api', ['read']), allow: true, reason: 'team/staff', scopes: ['read'], ttl: 1200, rules: { agent: 'team/sub-agents', human: 'team/staff' } },
  { name: 'grants that do not intersect', id: teamA(wendy), req: cred('api'), allow: false, reason: 'scopes of team/agents and team/writers do not intersect', denial: 'scope' },
  // conditions: time, network, request, errors
  { name: 'office hours (UTC)', id: teamA(), req: cred('office', ['read']), env: at('2026-03-03T10:00:00Z'), allow: true, reason: 'team/agents' },
  { name: 'after office hours', id: teamA(), req: cred('office', ['read']), env: at('2026-03-03T20:00:00Z'), allow: false, reason: 'grant office condition is false', denial: 'identity' },
  { name: 'weekend', id: teamA(), req: cred('office', ['read']), env: at('2026-03-01T10:00:00Z'), allow: false, reason: 'env.weekday' },
  { name: 'office hours and a person who may too', id: teamA(dave), req: cred('office', ['read']), env: at('2026-03-03T09:00:00Z'), allow: true, reason: 'team/staff' },
  { name: 'client inside the network', id: teamA(), req: cred('vpn-only', ['read']), env: at('2026-03-03T10:00:00Z', '10.20.30.40'), allow: true, reason: 'team/agents' },
  { name: 'client outside the network', id: teamA(), req: cred('vpn-only', ['read']), env: at('2026-03-03T10:00:00Z', '192.168.1.1'), allow: false, reason: 'inNetwork(env.clientAddress, "10.0.0.0/8")' },
  { name: 'client address unknown', id: teamA(), req: cred('vpn-only', ['read']), env: { now: TUESDAY_10 }, allow: false, reason: 'condition is false' },
  { name: 'short lifetime requested', id: teamA(), req: cred('short', ['read'], 300), allow: true, reason: 'team/agents' },
  { name: 'lifetime requested too long', id: teamA(), req: cred('short', ['read'], 600), allow: false, reason: 'request.lifetime <= 300' },
  { name: 'no lifetime requested (0)', id: teamA(), req: cred('short', ['read']), allow: false, reason: 'request.lifetime > 0' },
  { name: 'condition that cannot be evaluated denies', id: teamA(), req: cred('ns', ['read']), allow: false, reason: 'could not be evaluated', denial: 'identity' },
  { name: 'the same condition with the attribute', id: wl('dev://team-a/x', { namespace: 'prod' }), req: cred('ns', ['read']), allow: true, reason: 'team/agents' },
  { name: 'the same condition, false', id: wl('dev://team-a/x', { namespace: 'dev' }), req: cred('ns', ['read']), allow: false, reason: 'condition is false' },
  // delegation
  { name: 'delegation depth 2 within the rule', id: teamA(undefined, [stranger]), req: cred('api', ['read']), allow: true, reason: 'team/agents' },
  { name: 'delegation depth 3 beyond the rule', id: teamA(undefined, [task, stranger]), req: cred('api', ['read']), allow: false, reason: 'rule condition is false: delegation.depth <= 2' },
  { name: 'delegated by one of our tasks', id: teamB('gold', [task]), req: cred('api', ['read']), allow: true, reason: 'team/sub-agents' },
  { name: 'delegated by someone else', id: teamB('gold', [stranger]), req: cred('api', ['read']), allow: false, reason: 'delegation.delegatedBy' },
  { name: 'delegation depth 4', id: teamB('gold', [task, task, task]), req: cred('api', ['read']), allow: false, reason: 'delegation.depth <= 3' },
  // obligations
  { name: 'approval obligation is carried in the decision', id: teamA(), req: cred('approve', ['read']), allow: true, reason: 'team/agents', obligations: { approval: { approvers: ['sre-lead'], windowSeconds: 900 } } },
  { name: 'session tags of both sides are merged', id: teamA(carol), req: cred('tagged', ['read']), allow: true, reason: 'team/sre-humans', obligations: { sessionTags: { team: 'a', oncall: 'true' } } },
  { name: 'scope parameters of both sides intersect (lists item by item)', id: teamA(bob), req: cred('repos', ['code']), allow: true, reason: 'team/sre-humans', rules: { agent: 'team/agents', human: 'team/sre-humans' }, scopeParams: { code: { repositories: 'web', permissions: 'contents:read' } } },
  { name: 'scope parameters with nothing in common refuse the pair', id: teamA(dave), req: cred('repos', ['code']), allow: false, reason: 'parameter repositories of scope code has nothing in common between team/agents (app,web) and team/staff (docs)', denial: 'scope' },
  { name: 'permissions intersect by name at the weaker level (write ∩ read = read)', id: teamA(bob), req: cred('gh', ['code']), allow: true, reason: 'team/sre-humans', scopeParams: { code: { permissions: 'contents:read,pull_requests:read' } } },
  { name: 'permissions with no name in common refuse the pair', id: teamA(dave), req: cred('gh', ['code']), allow: false, reason: 'parameter permissions of scope code has nothing in common between team/agents (contents:write,issues:write,pull_requests:read) and team/staff (actions:write)', denial: 'scope' },
  { name: 'the agent alone keeps its own parameters', id: teamA(), req: cred('repos', ['code']), allow: true, reason: 'team/agents', scopeParams: { code: { repositories: 'app,web', permissions: 'contents:read' } } },
  { name: 'conflicting session tags refuse the pair', id: teamA(dave), req: cred('tagged', ['read']), allow: false, reason: 'session tag team differs between team/agents and team/staff', denial: 'human' },
  // TTL caps
  { name: 'grant without maxTtl: tokens.accessTokenMaxTtl', id: wl('dev://legacy/x'), req: cred('legacy-api', ['read']), allow: true, reason: 'rule legacy-open grants legacy-api', ttl: 2400 },
  { name: 'grant maxTtl above tokens.accessTokenMaxTtl is capped', id: teamA(), req: cred('long', ['read']), allow: true, reason: 'team/agents', ttl: 2400 },
  { name: 'a person whose grant lasts longer does not extend the agent\'s', id: teamA(dave), req: cred('api', ['write']), allow: true, reason: 'team/staff', ttl: 1800 },
  { name: 'a lifetime request does not widen the cap', id: teamA(), req: cred('api', ['read'], 99999), allow: true, reason: 'team/agents', ttl: 1800 },
  // v1 rules in the same engine
  { name: 'v1 rule with human conditions counts for both sides', id: wl('dev://legacy/bot', {}, { human: ops }), req: cred('legacy-db', ['read']), allow: true, reason: 'rule legacy grants legacy-db', ttl: 60, rules: { agent: 'legacy', human: 'legacy' } },
  { name: 'v1 rule requiring a person, without one', id: wl('dev://legacy/bot'), req: cred('legacy-db', ['read']), allow: false, reason: 'closest rule legacy: rule requires a human principal', denial: 'human' },
  { name: 'v1 rule, person in the wrong group', id: wl('dev://legacy/bot', {}, { human: eve }), req: cred('legacy-db', ['read']), allow: false, reason: 'human is in none of the groups ops', denial: 'human' },
  { name: 'v1 rule without human conditions accepts any person (as before)', id: wl('dev://legacy/x', {}, { human: eve }), req: cred('legacy-api', ['read']), allow: true, reason: 'legacy-open', rules: { agent: 'legacy-open', human: 'legacy-open' } },
  { name: 'v1 agent token', id: wl('dev://legacy/x'), req: token(), allow: true, reason: 'rule legacy-open allows an agent token', ttl: 3600 },
];

describe('policy v2 decision table', () => {
  it('has at least 60 decisions', () => {
    expect(loaded.problems).toEqual([]);
    expect(rows.length).toBeGreaterThanOrEqual(60);
  });

  it.each(rows.map((r) => [r.name, r] as const))('%s', (_name, row) => {
    const d = engine.evaluate(row.id, row.req, row.env ?? at('2026-03-03T10:00:00Z'));
    const summary = `${d.allow ? 'allow' : 'deny'}: ${d.reasons.join('; ')}`;
    expect(d.allow, summary).toBe(row.allow);
    expect(d.reasons.join('; ')).toContain(row.reason);
    expect(d.policyVersion).toBe(engine.version);
    if (row.scopes) expect(d.grantedScopes).toEqual(row.scopes);
    if (row.ttl !== undefined) expect(d.ttlCapSeconds).toBe(row.ttl);
    if (row.rules) expect(d.decidingRules).toEqual(row.rules);
    if (row.denial) expect(d.denial).toBe(row.denial);
    if ('obligations' in row) expect(d.obligations).toEqual(row.obligations);
    if ('scopeParams' in row) expect(d.scopeParams).toEqual(row.scopeParams);
    if (!row.allow) expect(d).toMatchObject({ grantedScopes: [], ttlCapSeconds: 0 });
  });

  it('explains the same decision, listing every rule with why it matched or not', () => {
    for (const row of rows) {
      const env = row.env ?? at('2026-03-03T10:00:00Z');
      const e = engine.explain(row.id, row.req, env);
      expect(e.decision).toEqual(engine.evaluate(row.id, row.req, env));
      expect(e.rules.map((r) => r.rule)).toEqual(engine.model.rules.map((r) => r.id));
      for (const r of e.rules) expect(r.reason.length).toBeGreaterThan(0);
      // The index only skips rules that cannot allow: every deciding rule matched in the full scan too.
      const matched = new Set(e.rules.filter((r) => r.matched).map((r) => r.rule));
      if (e.decision.allow) {
        expect(matched.has(e.decision.decidingRules!.agent)).toBe(true);
        if (e.decision.decidingRules!.human) expect(matched.has(e.decision.decidingRules!.human)).toBe(true);
      }
    }
  });

  it('records a content hash as the version, which changes with the content', () => {
    expect(engine.version).toMatch(/^sha256:[0-9a-f]{16}$/);
    const other = createPolicyEngine({ rules: v1.rules.slice(1) }, { agentTokenMaxTtl: 3600, accessTokenMaxTtl: 2400, documents: loaded.documents });
    expect(other.version).not.toBe(engine.version);
  });

  it('explains a condition failure with the expression', () => {
    const e = engine.explain(teamA(), cred('office', ['read']), at('2026-03-03T22:00:00Z'));
    expect(e.rules.find((r) => r.rule === 'team/agents')).toMatchObject({ matched: false, stage: 'condition' });
    expect(e.rules.find((r) => r.rule === 'team/agents')!.reason).toContain('env.hour < 18');
    expect(e.rules.find((r) => r.rule === 'team/staff')!.reason).toContain('no person');
  });
});
