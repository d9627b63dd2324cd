import { describe, expect, it } from 'vitest';
import type { BlendedIdentity } from '../core/types.js';
import { PolicyDenied } from '../errors/sts-errors.js';
import type { GrantRequirements } from './credential-issuer.js';
import { AwsStsIssuerConfigSchema, checkAwsGrant } from './aws-sts/aws-sts-issuer.js';
import { sessionPolicyText, sessionTagsFor } from './aws-sts/aws-session.js';
import { checkPostgresGrant, PostgresIssuerConfigSchema } from './postgres/postgres-issuer.js';
import { checkMysqlGrant, MysqlIssuerConfigSchema } from './mysql/mysql-issuer.js';
import { checkGithubGrant, GithubAppIssuerConfigSchema } from './github-app/github-app-issuer.js';
import { checkJwtGrant } from './agent-sts-jwt/agent-sts-jwt-issuer.js';
import { noGrantParameters } from './credential-issuer.js';

// How policy scope parameters and session-tag obligations map onto each issuer's request, and
// which ones each issuer refuses (the same checks run at load, with file and line, and at issue).

const grant = (scopes: Record<string, Record<string, string>>, extra: Partial<GrantRequirements> = {}): GrantRequirements => ({
  scopes: new Map(Object.entries(scopes)),
  standalone: true,
  ...extra,
});
const identity = (attributes: Record<string, string> = {}, human?: { subject: string; email?: string }): BlendedIdentity => ({
  workload: { kind: 'workload', provider: 'ci', providerType: 'oidc', subject: 'test://agent', attributes, claims: {}, expiresAt: new Date() },
  ...(human ? { human: { kind: 'human' as const, provider: 'corp', issuer: 'https://idp.test', subject: human.subject, email: human.email, groups: [], roles: [], expiresAt: new Date() } } : {}),
  priorActors: [],
});

describe('aws-sts: session policy and session tags from the grant', () => {
  const config = AwsStsIssuerConfigSchema.parse({
    region: 'eu-west-1',
    roles: {
      deploy: { roleArn: 'arn:aws:iam::111122223333:role/deploy' },
      bucket: {
        roleArn: 'arn:aws:iam::111122223333:role/reader',
        sessionPolicy: { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: 's3:GetObject', Resource: 'arn:aws:s3:::${param.bucket}/${task_id}/*' }] },
      },
    },
  });
  const values = { task_id: 't_1', workload: 'test://agent', human: '', source_identity: 'test___agent' };

  it('builds an Allow statement from actions and resources when the role has no template', () => {
    const params = { actions: 's3:GetObject, s3:ListBucket', resources: 'arn:aws:s3:::reports,arn:aws:s3:::reports/*' };
    expect(checkAwsGrant(config, grant({ deploy: params }))).toEqual([]);
    expect(JSON.parse(sessionPolicyText(undefined, params, values)!)).toEqual({
      Version: '2012-10-17',
      Statement: [{ Effect: 'Allow', Action: ['s3:GetObject', 's3:ListBucket'], Resource: ['arn:aws:s3:::reports', 'arn:aws:s3:::reports/*'] }],
    });
    expect(JSON.parse(sessionPolicyText(undefined, { actions: 'ec2:Describe*' }, values)!).Statement[0]).toEqual({ Effect: 'Allow', Action: ['ec2:Describe*'], Resource: '*' });
    expect(sessionPolicyText(undefined, {}, values)).toBeUndefined(); // no parameters: the role's own permissions
  });

  it('substitutes ${param.<name>} into the template inside its JSON string', () => {
    expect(checkAwsGrant(config, grant({ bucket: { bucket: 'reports' } }))).toEqual([]);
    const text = sessionPolicyText(config.roles.bucket!.sessionPolicy, { bucket: 'reports' }, values)!;
    expect(JSON.parse(text).Statement[0].Resource).toBe('arn:aws:s3:::reports/t_1/*');
  });

  it('refuses parameters a role cannot use, values that could widen a template, and missing ones', () => {
    expect(checkAwsGrant(config, grant({ deploy: { region: 'eu' } })).join()).toMatch(/unknown parameter region/);
    expect(checkAwsGrant(config, grant({ deploy: { actions: 'GetObject' } })).join()).toMatch(/actions item "GetObject" is not an IAM action/);
    expect(checkAwsGrant(config, grant({ deploy: { resources: 'reports' } })).join()).toMatch(/resources item "reports" is not an ARN/);
    expect(checkAwsGrant(config, grant({ bucket: { bucket: '*' } })).join()).toMatch(/no wildcards/);
    expect(checkAwsGrant(config, grant({ bucket: { bucket: 'a,b' } })).join()).toMatch(/no wildcards or lists/);
    expect(checkAwsGrant(config, grant({ bucket: { prefix: 'x', bucket: 'y' } })).join()).toMatch(/parameter prefix is not used by the role's session-policy template/);
    expect(checkAwsGrant(config, grant({ bucket: {} })).join()).toMatch(/template needs parameter bucket/);
    // a grant a human rule may complete (standalone: false) is not refused for a missing template value
    expect(checkAwsGrant(config, grant({ bucket: {} }, { standalone: false }))).toEqual([]);
    expect(checkAwsGrant(config, grant({ nope: { actions: 's3:GetObject' } })).join()).toMatch(/maps to no role/);
    const big = Array.from({ length: 60 }, (_, i) => `arn:aws:s3:::bucket-number-${i}/*`).join(',');
    expect(checkAwsGrant(config, grant({ deploy: { resources: big } })).join()).toMatch(/characters; AWS allows 2048/);
  });

  it('adds the obligation tags, rendering identity placeholders and fitting values to AWS', () => {
    const tags = sessionTagsFor('t_1', identity({ team: 'pay ments/€' }, { subject: 'alice', email: 'alice@example.com' }), {
      team: '${workload.attributes.team}', who: '${human.email}', cost: 'cc-42', long: `${'x'.repeat(300)}`,
    });
    expect(tags.slice(0, 3).map((t) => t.Key)).toEqual(['agent-sts:task', 'agent-sts:subject', 'agent-sts:human']);
    expect(tags).toContainEqual({ Key: 'team', Value: 'pay ments/_' }); // € is outside AWS's tag charset
    expect(tags).toContainEqual({ Key: 'who', Value: 'alice@example.com' });
    expect(tags).toContainEqual({ Key: 'cost', Value: 'cc-42' });
    expect(tags.find((t) => t.Key === 'long')!.Value!.length).toBe(256);
  });

  it('refuses an issuance whose tag needs a value the identity lacks', () => {
    expect(() => sessionTagsFor('t_1', identity(), { team: '${workload.attributes.team}' })).toThrow(PolicyDenied);
    expect(() => sessionTagsFor('t_1', identity(), { who: '${human.subject}' })).toThrow(PolicyDenied);
  });

  it('refuses tag keys AWS or agent-sts reserve, duplicates, bad text and unknown placeholders', () => {
    const problems = (tags: Record<string, string>) => checkAwsGrant(config, grant({ deploy: {} }, { sessionTags: tags })).join('\n');
    expect(problems({ team: 'a', 'cost-center': '${task_id}' })).toBe('');
    expect(problems({ 'aws:team': 'a' })).toMatch(/reserved/);
    expect(problems({ 'agent-sts:task': 'a' })).toMatch(/reserved/);
    expect(problems({ Team: 'a', team: 'b' })).toMatch(/used twice/);
    expect(problems({ team: 'a;b' })).toMatch(/value's text/);
    expect(problems({ team: '${workload.secret}' })).toMatch(/unknown placeholder \$\{workload.secret\}/);
    expect(problems(Object.fromEntries(Array.from({ length: 48 }, (_, i) => [`k${i}`, 'v'])))).toMatch(/AWS allows 50/);
  });
});

describe('postgres and mysql: the role parameter chooses from the allow-list only', () => {
  const pg = PostgresIssuerConfigSchema.parse({ adminUrl: { fromEnv: 'PG' }, roles: { read: 'app_reader', write: 'app_writer' }, grantableRoles: { write: ['ledger_writer'] } });
  const my = MysqlIssuerConfigSchema.parse({
    adminUrl: { fromEnv: 'MY' },
    grants: { read: [{ privileges: ['SELECT'], on: 'app.*' }], write: [{ role: 'app_writer' }] },
    grantableRoles: { write: ['ledger_writer'] },
  });

  it('accepts the default role and the grantable ones', () => {
    expect(checkPostgresGrant(pg, grant({ write: { role: 'ledger_writer' }, read: {} }))).toEqual([]);
    expect(checkPostgresGrant(pg, grant({ write: { role: 'app_writer' } }))).toEqual([]);
    expect(checkMysqlGrant(my, grant({ write: { role: 'ledger_writer' } }))).toEqual([]);
    expect(checkMysqlGrant(my, grant({ write: { role: 'app_writer' } }))).toEqual([]);
  });

  it('refuses a role the issuer does not list for the scope (a policy cannot name an arbitrary role)', () => {
    expect(checkPostgresGrant(pg, grant({ write: { role: 'postgres' } })).join()).toMatch(/role "postgres" is not allowed for this scope \(the issuer allows: app_writer, ledger_writer/);
    expect(checkPostgresGrant(pg, grant({ read: { role: 'ledger_writer' } })).join()).toMatch(/not allowed for this scope \(the issuer allows: app_reader;/);
    expect(checkMysqlGrant(my, grant({ read: { role: 'app_writer' } })).join()).toMatch(/no role for it/);
    expect(checkMysqlGrant(my, grant({ write: { role: 'root' } })).join()).toMatch(/role "root" is not allowed/);
  });

  it('refuses other parameters and session tags', () => {
    expect(checkPostgresGrant(pg, grant({ read: { schema: 'x' } })).join()).toMatch(/unknown parameter schema/);
    expect(checkMysqlGrant(my, grant({ read: {} }, { sessionTags: { team: 'a' } })).join()).toMatch(/cannot carry session tags/);
  });

  it('refuses grantableRoles for a scope without a default', () => {
    const r = PostgresIssuerConfigSchema.safeParse({ adminUrl: { fromEnv: 'PG' }, roles: { read: 'app_reader' }, grantableRoles: { write: ['x'] } });
    expect(r.success).toBe(false);
    expect(JSON.stringify(r.error?.issues)).toContain('scope write is not in roles');
  });
});

describe('github-app: repositories and permissions narrow a scope, never widen it', () => {
  const config = GithubAppIssuerConfigSchema.parse({
    appId: 1, privateKey: { fromEnv: 'K' }, installationId: 2,
    repositories: [{ id: 101, name: 'payments' }, { id: 102, name: 'web' }, { id: 103, name: 'docs' }],
    scopes: { code: { permissions: { contents: 'write', issues: 'read' } }, docs: { permissions: { contents: 'write' }, repositories: [103] } },
  });

  it('accepts ids and configured names within the scope, and lower permission levels', () => {
    expect(checkGithubGrant(config, grant({ code: { repositories: 'payments, 102', permissions: 'contents:read,issues:read' } }))).toEqual([]);
  });

  it('refuses repositories outside the scope or the allow-list, and wider or unknown permissions', () => {
    expect(checkGithubGrant(config, grant({ docs: { repositories: 'payments' } })).join()).toMatch(/repository 101 is not among the repositories this scope may hand out/);
    expect(checkGithubGrant(config, grant({ code: { repositories: '999,secret-repo' } })).join()).toMatch(/"secret-repo" is not in this issuer's repositories/);
    expect(checkGithubGrant(config, grant({ code: { permissions: 'issues:write' } })).join()).toMatch(/issues:write is wider than the scope's issues:read/);
    expect(checkGithubGrant(config, grant({ code: { permissions: 'administration:read' } })).join()).toMatch(/permission administration is not one this scope grants/);
    expect(checkGithubGrant(config, grant({ code: { permissions: 'contents' } })).join()).toMatch(/not name:read/);
    expect(checkGithubGrant(config, grant({ code: { branch: 'main' } })).join()).toMatch(/unknown parameter branch/);
  });
});

describe('issuers without parameters', () => {
  it('vault takes no parameters and no tags; agent-sts-jwt carries any parameters but checks tag placeholders', () => {
    expect(noGrantParameters('vault', grant({ read: { path: 'x' } }, { sessionTags: { a: 'b' } }))).toHaveLength(2);
    expect(checkJwtGrant({}, grant({ write: { ledger: 'eu' } }, { sessionTags: { team: '${workload.subject}' } }))).toEqual([]);
    expect(checkJwtGrant({}, grant({}, { sessionTags: { team: '${nope}' } })).join()).toMatch(/unknown placeholder/);
  });
});
