// AWS session credentials through the real broker (SQLite store): agent token -> AssumeRole via the
// aws-sts issuer (fake STS checking SigV4) -> the session works at AWS (the fake) in the
// credential_process shape -> task end cuts it off before its expiry (Deny on the role, enforced
// by the fake) while a session of another task keeps working. A lifetime under AWS's 900 s
// minimum is refused, not lengthened.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GetAccessKeyInfoCommand, GetCallerIdentityCommand, STSClient } from '@aws-sdk/client-sts';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import type { TestBroker } from '../support/broker.js';
import { startE2eBroker, type E2eBroker } from '../support/e2e-broker.js';

const AWS_CREDS = 'urn:agent-sts:token-type:aws-credentials';
const REGION = 'eu-west-1';
const OWN = { accessKeyId: 'AKIAE2EAGENTSTS00001', secretAccessKey: 'e2e-agent-sts-secret/abcdefghijklmnopqrst' };
const ROLE = 'arn:aws:iam::111122223333:role/deploy';

interface ProcessCreds { Version: number; AccessKeyId: string; SecretAccessKey: string; SessionToken: string; Expiration: string }

describe('aws-sts sessions through the token endpoint', () => {
  let e2e: E2eBroker;
  let sts: FakeSts;
  let broker: TestBroker;

  beforeAll(async () => {
    sts = await startFakeSts({ region: REGION, keys: [{ ...OWN, identity: { type: 'user', account: '111122223333', userName: 'agent-sts', userId: 'AIDAE2E' } }], roles: [{ arn: ROLE, roleId: 'AROAE2EDEPLOY0000001' }] });
    e2e = await startE2eBroker({
      name: 'agsts-aws-e2e',
      env: { OWN_SECRET: OWN.secretAccessKey },
      config: {
        credentialIssuers: [{ name: 'aws', type: 'aws-sts', config: { region: REGION, endpoint: sts.url, iamEndpoint: sts.iamUrl, credentials: { accessKeyId: OWN.accessKeyId, secretAccessKey: { fromEnv: 'OWN_SECRET' } }, roles: { deploy: { roleArn: ROLE } } } }],
        targets: [{ name: 'aws-deploy', audiences: ['aws-deploy'], issuer: 'aws', scopes: ['deploy'] }],
        policy: { rules: [{ id: 'r', workload: { subject: 'test://agent' }, agentToken: { maxTtl: '1h' }, grants: [{ target: 'aws-deploy', scopes: ['deploy'], maxTtl: '30m' }] }] },
      },
    });
    broker = e2e.broker;
  });
  afterAll(async () => {
    await e2e?.close();
    await sts?.close();
  });

  const agent = () => e2e.agentToken('agent');
  const session = (token: string, lifetime = '900') =>
    e2e.exchange(token, { audience: 'aws-deploy', scope: 'deploy', requested_token_type: AWS_CREDS, requested_lifetime: lifetime });
  async function alive(c: ProcessCreds): Promise<boolean> {
    const client = new STSClient({ region: REGION, endpoint: sts.url, credentials: { accessKeyId: c.AccessKeyId, secretAccessKey: c.SecretAccessKey, sessionToken: c.SessionToken } });
    try {
      await client.send(new GetAccessKeyInfoCommand({ AccessKeyId: c.AccessKeyId }));
      return true;
    } catch (e) {
      if ((e as { name?: string }).name === 'AccessDenied') return false;
      throw e;
    } finally {
      client.destroy();
    }
  }

  it('a session for the role, in credential_process shape, cut off at task end; another task keeps its own', async () => {
    const a = await agent();
    const b = await agent();
    const ra = await session(a.token);
    const rb = await session(b.token);
    expect(ra.status, ra.text).toBe(200);
    expect(rb.status, rb.text).toBe(200);
    const ca = ra.json.credentials as ProcessCreds;
    const cb = rb.json.credentials as ProcessCreds;
    expect(ca).toMatchObject({ Version: 1, AccessKeyId: expect.any(String), SecretAccessKey: expect.any(String), SessionToken: expect.any(String) });
    expect(Math.abs(Date.parse(ca.Expiration) - Date.now() - 900_000)).toBeLessThan(5_000);
    expect(ra.json.expires_in).toBeLessThanOrEqual(900);
    const who = new STSClient({ region: REGION, endpoint: sts.url, credentials: { accessKeyId: ca.AccessKeyId, secretAccessKey: ca.SecretAccessKey, sessionToken: ca.SessionToken } });
    expect((await who.send(new GetCallerIdentityCommand({}))).Arn).toBe(`arn:aws:sts::111122223333:assumed-role/deploy/ags-${a.task}`);
    who.destroy();
    expect(sts.assumeRoleCalls.at(-2)).toMatchObject({ RoleArn: ROLE, SourceIdentity: expect.stringContaining('agent') });
    expect(await alive(ca)).toBe(true);

    const end = await fetch(`${broker.url}/v1/tasks/${a.task}`, { method: 'DELETE', headers: { authorization: `Bearer ${a.token}` } });
    expect(end.status).toBe(200);
    expect(await alive(ca)).toBe(false);
    expect(await alive(cb)).toBe(true);
    expect(broker.logs.join('\n')).not.toContain(ca.SecretAccessKey);
    expect(broker.logs.join('\n')).not.toContain(OWN.secretAccessKey);
  });

  // AWS matches a deny statement to sessions by aws:userid (role id + session name), and the session
  // name is the task's: revoking one session cuts off that task's other sessions of the role too.
  it('RFC 7009 by the holder: the session token as handed out cuts off the task\'s sessions of that role now; other tasks and the task go on', async () => {
    const a = await agent();
    const r = await session(a.token);
    expect(r.status, r.text).toBe(200);
    const c = r.json.credentials as ProcessCreds;
    expect(String(r.json.access_token)).toBe(c.SessionToken);
    const other = (await session(a.token)).json.credentials as ProcessCreds;
    const b = await agent();
    const elsewhere = (await session(b.token)).json.credentials as ProcessCreds;
    expect(await alive(c)).toBe(true);
    const res = await fetch(`${broker.url}/oauth2/revoke`, { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: new URLSearchParams({ token: c.SessionToken }) });
    expect(res.status).toBe(200);
    expect(await alive(c)).toBe(false);
    expect(await alive(other)).toBe(false);
    expect(await alive(elsewhere)).toBe(true);
    expect((await broker.composed.db.task.findUniqueOrThrow({ where: { id: a.task } })).state).toBe('open');
    const rows = await broker.composed.db.credential.findMany({ where: { taskId: a.task, issuerName: 'aws' }, orderBy: { issuedAt: 'asc' } });
    expect(rows.map((x) => x.state)).toEqual(['revoked', 'active']); // the other is cut off at AWS and revoked (again) at task end
    expect(broker.logs.join('\n')).not.toContain(c.SessionToken);
    for (const t of [a, b]) await fetch(`${broker.url}/v1/tasks/${t.task}`, { method: 'DELETE', headers: { authorization: `Bearer ${t.token}` } });
  });

  it('a lifetime under AWS minimum is refused with a clear error, not lengthened', async () => {
    const a = await agent();
    const calls = sts.assumeRoleCalls.length;
    const r = await session(a.token, '300');
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_request');
    expect(String(r.json.error_description)).toMatch(/900/);
    expect(sts.assumeRoleCalls.length).toBe(calls);
  });
});
