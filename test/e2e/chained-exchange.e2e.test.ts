// An MCP server that must call further upstream exchanges the access token it was handed (RFC 8693
// delegation, STANDARDS §10) instead of passing it through: subject_token = the agent-sts access
// token issued for its target, actor_token = its own attestation. Only a workload in the target's
// servedBy may; what it gets belongs to the agent's task (ending the task kills the PostgreSQL login),
// lives no longer than the presented token, and carries the chain as nested `act`. Through HTTP
// against a real broker and the real PostgreSQL.
import { createHash, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { calculateJwkThumbprint, decodeJwt, exportJWK, generateKeyPair, SignJWT } from 'jose';
import pg from 'pg';
import { startFakeOidcIssuer, type FakeIssuer } from '../fakes/oidc-issuer.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, TOKEN_EXCHANGE } from '../support/broker.js';
import { PG_ADMIN_URL, pgRoleExists } from '../support/databases.js';
import { PG_CREDS, startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const PREFIX = 'agschn_';

describe('chained exchange by the workload that serves a target (targets[].servedBy)', () => {
  let e2e: E2eBroker;
  let corp: FakeIssuer;

  beforeAll(async () => {
    corp = await startFakeOidcIssuer();
    e2e = await startE2eBroker({
      name: 'agsts-chained',
      pgRolePrefix: PREFIX,
      moreTrustProviders: [{ name: 'corp', type: 'oidc', config: { issuer: corp.issuer, audience: 'sts', human: true } }],
      config: {
        credentialIssuers: [
          { name: 'tokens', type: 'agent-sts-jwt' },
          { name: 'pg', type: 'postgres', config: { adminUrl: { fromEnv: 'PG_ADMIN' }, roles: { read: 'pg_read_all_data' }, rolePrefix: PREFIX } },
        ],
        targets: [
          { name: 'mcp', resources: ['https://mcp.test/'], issuer: 'tokens', scopes: ['tools:run'], servedBy: [{ provider: 'ci', subject: 'test://mcp-server' }] },
          { name: 'other-mcp', resources: ['https://other-mcp.test/'], issuer: 'tokens', scopes: ['tools:run'] },
          { name: 'mcp-bound', resources: ['https://mcp-bound.test/'], issuer: 'tokens', scopes: ['tools:run'], dpop: 'required', servedBy: [{ provider: 'ci', subjectPattern: 'test://mcp-.+' }] },
          { name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] },
          { name: 'db', audiences: ['db'], issuer: 'pg', scopes: ['read'] },
        ],
        policy: {
          rules: [
            { id: 'assistant', workload: { subject: 'test://assistant' }, agentToken: { maxTtl: '10m' }, grants: ['mcp', 'other-mcp', 'mcp-bound'].map((target) => ({ target, scopes: ['tools:run'], maxTtl: '2m' })) },
            { id: 'mcp-server', workload: { subject: 'test://mcp-server' }, grants: [{ target: 'db', scopes: ['read'], maxTtl: '10m' }, { target: 'api', scopes: ['read'], maxTtl: '10m' }] },
            { id: 'intruder', workload: { subject: 'test://intruder' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '10m' }] },
          ],
        },
      },
    });
  });
  afterAll(async () => {
    await e2e?.close();
    await corp?.close();
  });

  /** The agent's tool call: an access token for `resource` (default the MCP server). */
  const toolToken = async (agent: string, resource = 'https://mcp.test/') => {
    const r = await e2e.exchange(agent, { resource, scope: 'tools:run' });
    expect(r.status, r.text).toBe(200);
    return r.json.access_token as string;
  };
  /** The MCP server's own exchange: the token it was handed as subject_token, its attestation (by default) as actor_token. */
  const downstream = async (handed: string, fields: Record<string, string>, actor: string | null = 'mcp-server') =>
    postToken(e2e.broker.url, {
      grant_type: TOKEN_EXCHANGE,
      subject_token: handed,
      subject_token_type: ACCESS_TOKEN_TYPE,
      ...(actor ? { actor_token: await e2e.attest(actor), actor_token_type: JWT_TYPE } : {}),
      ...fields,
    });
  const recordOf = async (requestId: string) => {
    await e2e.broker.composed.audit.drain();
    return e2e.broker.composed.db.auditEvent.findFirstOrThrow({ where: { requestId } });
  };

  it('the serving workload gets a PostgreSQL login in the agent task: audited with the chain, killed when the task ends', async () => {
    const { token: agent, task } = await e2e.agentToken('assistant');
    const handed = await toolToken(agent);
    const r = await downstream(handed, { audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
    expect(r.status, r.text).toBe(200);
    expect(r.json.task_id).toBe(task);
    expect(r.json.expires_in).toBeLessThanOrEqual(120); // no longer than the token it presented
    const login = r.json.credentials as { username: string; password: string };
    expect(login.username.startsWith(PREFIX)).toBe(true);

    const rec = await recordOf(r.headers.get('x-request-id')!);
    expect(rec).toMatchObject({ outcome: 'allow', workloadSubject: 'test://mcp-server', taskId: task, target: 'db' });
    expect(JSON.parse(rec.delegationChain!)).toEqual(['test://assistant']);
    const row = await e2e.broker.composed.db.credential.findUniqueOrThrow({ where: { id: rec.credentialId! } });
    expect(row.taskId).toBe(task);

    const client = new pg.Client({ connectionString: PG_ADMIN_URL.replace('postgres@', `${login.username}:${encodeURIComponent(login.password)}@`) });
    await client.connect();
    expect((await client.query('select 1 as one')).rows[0].one).toBe(1);
    client.on('error', () => {}); // terminated at task end
    const ended = await fetch(`${e2e.broker.url}/v1/tasks/${task}`, { method: 'DELETE', headers: { authorization: `Bearer ${agent}` } });
    expect(ended.status).toBe(200);
    expect(await pgRoleExists(login.username)).toBe(false);
    await client.end().catch(() => {});

    // The handed token died with the task: it can no longer be exchanged.
    const after = await downstream(handed, { resource: 'https://api.test/', scope: 'read' });
    expect(after.status, after.text).toBe(400);
    expect(after.json.error).toBe('invalid_request');
  });

  it('an access token for the next API carries the chain as nested act, the person as sub', async () => {
    const { token: agent, task } = await e2e.agentToken('assistant');
    const api = await downstream(await toolToken(agent), { resource: 'https://api.test/', scope: 'read' });
    expect(api.status, api.text).toBe(200);
    expect(decodeJwt(api.json.access_token as string)).toMatchObject({ aud: 'https://api.test/', sub: 'test://mcp-server', act: { sub: 'test://assistant' }, task_id: task, scope: 'read' });

    // An agent acting for a person: the person stays the subject, the chain grows.
    const person = await corp.sign({ sub: 'alice', aud: 'sts' });
    const forAlice = await postToken(e2e.broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: person, subject_token_type: JWT_TYPE, actor_token: await e2e.attest('assistant'), actor_token_type: JWT_TYPE });
    expect(forAlice.status, forAlice.text).toBe(200);
    const handed = await toolToken(forAlice.json.access_token as string);
    const personSub = decodeJwt(handed).sub as string;
    expect(decodeJwt(handed).act).toEqual({ sub: 'test://assistant' });
    const chained = await downstream(handed, { resource: 'https://api.test/', scope: 'read' });
    expect(chained.status, chained.text).toBe(200);
    expect(decodeJwt(chained.json.access_token as string)).toMatchObject({ sub: personSub, act: { sub: 'test://mcp-server', act: { sub: 'test://assistant' } }, client_id: 'test://mcp-server' });
    const rec = await recordOf(chained.headers.get('x-request-id')!);
    expect(rec).toMatchObject({ humanSubject: personSub, workloadSubject: 'test://mcp-server' });
  });

  it.each([
    ['a workload not in servedBy', { actor: 'intruder' }, /does not serve the audience/],
    ['a token of a target without servedBy', { resource: 'https://other-mcp.test/' }, /does not serve the audience/],
    ['no actor_token', { actor: null }, /attestation as actor_token/],
  ] as const)('refuses %s: invalid_request, a deny record, nothing issued', async (_name, c, why) => {
    const { token: agent } = await e2e.agentToken('assistant');
    const handed = await toolToken(agent, 'resource' in c ? c.resource : undefined);
    const credentialsBefore = await e2e.broker.composed.db.credential.count();
    const r = await downstream(handed, { resource: 'https://api.test/', scope: 'read' }, 'actor' in c ? c.actor : 'mcp-server');
    expect(r.status, r.text).toBe(400);
    expect(r.json.error).toBe('invalid_request');
    const rec = await recordOf(r.headers.get('x-request-id')!);
    expect(rec.outcome).toBe('deny');
    expect(`${rec.reason}`).toMatch(why);
    expect(await e2e.broker.composed.db.credential.count()).toBe(credentialsBefore);
  });

  it('refuses the handed token as actor_token, a revoked one, and a forged one', async () => {
    const { token: agent } = await e2e.agentToken('assistant');
    const handed = await toolToken(agent);
    const asActor = await postToken(e2e.broker.url, {
      grant_type: TOKEN_EXCHANGE, subject_token: await e2e.attest('mcp-server'), subject_token_type: JWT_TYPE, actor_token: handed, actor_token_type: ACCESS_TOKEN_TYPE, resource: 'https://api.test/', scope: 'read',
    });
    expect(asActor.status, asActor.text).toBe(400);
    expect(asActor.json.error).toBe('invalid_request');

    const [h, p] = handed.split('.');
    const claims = JSON.parse(Buffer.from(p!, 'base64url').toString()) as Record<string, unknown>;
    const forged = `${h}.${Buffer.from(JSON.stringify({ ...claims, jti: randomUUID() })).toString('base64url')}.${handed.split('.')[2]}`;
    const f = await downstream(forged, { resource: 'https://api.test/', scope: 'read' });
    expect(f.status, f.text).toBe(400);
    expect(f.json.error).toBe('invalid_request');

    const revoked = await fetch(`${e2e.broker.url}/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: handed }) });
    expect(revoked.status).toBe(200);
    const r = await downstream(handed, { resource: 'https://api.test/', scope: 'read' });
    expect(r.status, r.text).toBe(400);
    expect(r.json.error).toBe('invalid_request');
    expect(String(r.json.error_description)).toMatch(/no longer valid/);
  });

  it('a DPoP-bound handed token is exchangeable without a proof by the agent key: the server proves itself by its attestation', async () => {
    const { publicKey, privateKey } = await generateKeyPair('ES256');
    const jwk = await exportJWK(publicKey);
    const proof = (token?: string) =>
      new SignJWT({ jti: randomUUID(), htm: 'POST', htu: `${e2e.broker.url}/oauth2/token`, iat: Math.floor(Date.now() / 1000), ...(token ? { ath: createHash('sha256').update(token).digest('base64url') } : {}) })
        .setProtectedHeader({ alg: 'ES256', typ: 'dpop+jwt', jwk })
        .sign(privateKey);
    const start = await postToken(e2e.broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: await e2e.attest('assistant'), subject_token_type: JWT_TYPE }, { headers: { dpop: await proof() } });
    const agent = start.json.access_token as string;
    const bound = await postToken(e2e.broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://mcp-bound.test/', scope: 'tools:run' }, { headers: { dpop: await proof(agent) } });
    expect(bound.status, bound.text).toBe(200);
    const handed = bound.json.access_token as string;
    expect(decodeJwt(handed).cnf).toEqual({ jkt: await calculateJwkThumbprint(jwk) });
    const r = await downstream(handed, { resource: 'https://api.test/', scope: 'read' });
    expect(r.status, r.text).toBe(200);
    expect(decodeJwt(r.json.access_token as string)).toMatchObject({ sub: 'test://mcp-server', act: { sub: 'test://assistant' } });
    expect(decodeJwt(r.json.access_token as string).cnf).toBeUndefined();
  });

  it('no handed token, password or attestation appears in a log line', async () => {
    const { token: agent } = await e2e.agentToken('assistant');
    const handed = await toolToken(agent);
    const r = await downstream(handed, { audience: 'db', scope: 'read', requested_token_type: PG_CREDS });
    const logs = e2e.broker.logs.join('\n');
    expect(logs).not.toContain(handed);
    expect(logs).not.toContain((r.json.credentials as { password: string }).password);
  });
});
