// Platform attestations through the real token endpoint (SQLite store): a Kubernetes pod token
// checked by TokenReview, and a signed AWS GetCallerIdentity request, each opening a task whose
// agent token then buys an access token. A deleted pod, a replayed AWS request and an unreachable
// API server are refused with the right RFC 6749 error, the last one as a generic temporary error.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { decodeJwt } from 'jose';
import { createTestSqliteUrl } from '../support/databases.js';
import { ACCESS_TOKEN_TYPE, JWT_TYPE, postToken, startBroker, TOKEN_EXCHANGE, type TestBroker } from '../support/broker.js';
import { closedPort, startFakeKubernetesApi, type FakeKubernetesApi } from '../fakes/kubernetes-api.js';
import { startFakeSts, type FakeSts } from '../fakes/aws-sts.js';
import { createAwsIamAttestation } from '../../src/trust-providers/aws-iam/attest.js';

const AWS_GCI = 'urn:agent-sts:token-type:aws-sigv4-gci';
const KEY = { accessKeyId: 'AKIAE2ETESTE2ETEST01', secretAccessKey: 'e2e/secret/0123456789abcdefghijklmnopqrst' };

describe('kubernetes and aws attestations through the token endpoint', () => {
  let k8s: FakeKubernetesApi;
  let sts: FakeSts;
  let broker: TestBroker;
  let drop: () => Promise<void>;

  beforeAll(async () => {
    k8s = await startFakeKubernetesApi();
    sts = await startFakeSts({ keys: [{ ...KEY, identity: { type: 'assumed-role', account: '111122223333', roleName: 'ci-runner', roleId: 'AROAE2E', sessionName: 'job-7' } }] });
    const s = createTestSqliteUrl('agsts-platform');
    drop = s.drop;
    const unreachable = k8s.kubeconfigFor({ server: `https://127.0.0.1:${await closedPort()}` });
    broker = await startBroker({
      storage: { url: s.url },
      trustProviders: [
        { name: 'prod', type: 'kubernetes', config: { clusterName: 'prod', issuer: k8s.issuer, audience: 'sts-prod', mode: 'tokenreview', kubeconfig: k8s.kubeconfigPath } },
        { name: 'dr', type: 'kubernetes', config: { clusterName: 'dr', issuer: k8s.issuer, audience: 'sts-dr', mode: 'tokenreview', kubeconfig: unreachable } },
        { name: 'aws', type: 'aws-iam', config: { stsEndpoint: sts.url, accounts: ['111122223333'] } },
      ],
      credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
      targets: [{ name: 'api', resources: ['https://api.test/'], issuer: 'tokens', scopes: ['read'] }],
      policy: {
        rules: [
          { id: 'agents-ns', workload: { provider: 'prod', subjectPattern: 'k8s://prod/ns/agents/sa/.+' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '5m' }] },
          { id: 'ci-role', workload: { provider: 'aws', subject: 'aws://111122223333/role/ci-runner' }, agentToken: { maxTtl: '10m' }, grants: [{ target: 'api', scopes: ['read'], maxTtl: '5m' }] },
        ],
      },
    });
  });
  afterAll(async () => {
    await broker?.close();
    await k8s?.close();
    await sts?.close();
    await drop?.();
  });

  const startup = (token: string, type = JWT_TYPE) => postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: token, subject_token_type: type });
  const perCall = (agent: string) => postToken(broker.url, { grant_type: TOKEN_EXCHANGE, subject_token: agent, subject_token_type: ACCESS_TOKEN_TYPE, resource: 'https://api.test/', scope: 'read' });

  it('a pod token, reviewed by its cluster, opens a task; a deleted pod is refused', async () => {
    const token = await k8s.mint({ namespace: 'agents', serviceAccount: 'planner', audiences: ['sts-prod'] });
    const r = await startup(token);
    expect(r.status, r.text).toBe(200);
    expect(decodeJwt(String(r.json.access_token)).sub).toBe('k8s://prod/ns/agents/sa/planner');
    expect((await perCall(String(r.json.access_token))).status).toBe(200);
    expect(k8s.tokenReviews.at(-1)).toMatchObject({ auth: 'reviewer', status: 201, body: { spec: { audiences: ['sts-prod'] } } });

    k8s.deletePod(k8s.last.pod!.uid);
    const again = await startup(token);
    expect(again.status).toBe(400);
    expect(again.json.error).toBe('invalid_request');
  });

  it('a pod in a namespace no rule names is refused by policy', async () => {
    const r = await startup(await k8s.mint({ namespace: 'default', serviceAccount: 'x', audiences: ['sts-prod'] }));
    expect(r.status).toBe(400);
    expect(r.json.error).toBe('invalid_request');
  });

  it("the other cluster's API server unreachable: 503 temporarily_unavailable, never an allow, cause logged", async () => {
    const r = await startup(await k8s.mint({ namespace: 'agents', serviceAccount: 'planner', audiences: ['sts-dr'] }));
    expect(r.status).toBe(503);
    expect(r.json.error).toBe('temporarily_unavailable');
    expect(broker.logs.some((l) => l.includes('"cause":"api-unreachable"'))).toBe(true);
  });

  it('a signed GetCallerIdentity opens a task for the role; the same request again is refused', async () => {
    const att = await createAwsIamAttestation({ serverId: broker.url, credentials: KEY });
    const r = await startup(att, AWS_GCI);
    expect(r.status, r.text).toBe(200);
    expect(decodeJwt(String(r.json.access_token)).sub).toBe('aws://111122223333/role/ci-runner');
    expect((await perCall(String(r.json.access_token))).status).toBe(200);
    const replay = await startup(att, AWS_GCI);
    expect(replay.status).toBe(400);
    expect(replay.json.error).toBe('invalid_request');
    const foreign = await startup(await createAwsIamAttestation({ serverId: 'https://other-broker.test', credentials: KEY }), AWS_GCI);
    expect(foreign.status).toBe(400);
  });

  it('no attestation or AWS secret reaches a log line', () => {
    const all = broker.logs.join('\n');
    expect(all).not.toContain(KEY.secretAccessKey);
    expect(all).not.toMatch(/Signature=[0-9a-f]{64}/);
    expect(all).not.toContain(k8s.reviewerToken);
  });
});
