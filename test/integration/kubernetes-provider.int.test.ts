import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { UnsecuredJWT } from 'jose';
import { closedPort, startFakeKubernetesApi, type FakeKubernetesApi, type FakeServiceAccountToken } from '../fakes/kubernetes-api.js';
import { kubernetesPlugin, KubernetesConfigSchema } from '../../src/trust-providers/kubernetes/kubernetes-provider.js';
import { createTrustRegistry } from '../../src/trust-providers/registry.js';
import { trustProviderCatalog } from '../../src/trust-providers/catalog.js';
import type { TrustProvider } from '../../src/trust-providers/trust-provider.js';
import { testProviderDeps } from '../support/provider-deps.js';
import { createLogger } from '../../src/log/logger.js';
import { SubjectTokenRejected, UpstreamUnavailable, type StsError } from '../../src/errors/sts-errors.js';
import { JWT_TOKEN_TYPES } from '../../src/lib/urns.js';

const logLines: string[] = [];
const deps = testProviderDeps({ logger: createLogger({ level: 'trace', destination: { write: (l: string) => void logLines.push(l) } }) });
const ctx = () => ({ requestId: 'test', now: new Date() });
const JWT = JWT_TOKEN_TYPES[0]!;
const AUD = 'https://sts.example.internal';
const DEFAULT_ISSUER = 'https://kubernetes.default.svc.cluster.local';

/** Every token minted in this file: none may ever appear in a log line. */
const minted: string[] = [];
const secrets: string[] = [];

let k8s: FakeKubernetesApi;
const mint = async (o: FakeServiceAccountToken = {}, api: FakeKubernetesApi = k8s) => {
  const t = await api.mint({ audiences: [AUD], ...o });
  minted.push(t);
  return t;
};
const now = () => Math.floor(Date.now() / 1000);

const provider = (name: string, config: Record<string, unknown>): TrustProvider =>
  kubernetesPlugin.create(name, KubernetesConfigSchema.parse({ clusterName: 'prod', audience: AUD, ...config }), deps);
const jwksProvider = (extra: Record<string, unknown> = {}) => provider('k8s-jwks', { issuer: k8s.issuer, mode: 'jwks', ...extra });
const reviewProvider = (extra: Record<string, unknown> = {}) =>
  provider('k8s-review', { issuer: k8s.issuer, mode: 'tokenreview', kubeconfig: k8s.kubeconfigPath, jwksUri: k8s.publicJwksUri, ...extra });
/** TokenReview only: no offline pre-check, so bad tokens reach the (fake) API server. */
const onlineProvider = (extra: Record<string, unknown> = {}) =>
  provider('k8s-online', { issuer: k8s.issuer, mode: 'tokenreview', kubeconfig: k8s.kubeconfigPath, ...extra });

beforeAll(async () => {
  k8s = await startFakeKubernetesApi();
  secrets.push(k8s.reviewerToken, k8s.noRbacToken);
});
afterAll(async () => {
  await k8s.close();
});

describe('kubernetes trust provider: configuration', () => {
  it('is registered in the catalog', () => {
    expect(trustProviderCatalog.get('kubernetes')).toBe(kubernetesPlugin);
  });

  it.each([
    ['uppercase cluster name', { clusterName: 'Prod', mode: 'jwks' }],
    ['missing audience', { audience: undefined, mode: 'jwks' }],
    ['missing mode', {}],
    ['tokenreview without credentials', { mode: 'tokenreview' }],
    ['tokenreview with both kubeconfig and inCluster', { mode: 'tokenreview', kubeconfig: '/x', inCluster: true }],
    ['review cache longer than 30s', { mode: 'tokenreview', kubeconfig: '/x', reviewCacheTtl: '31s' }],
    ['jwks mode with a kubeconfig', { mode: 'jwks', kubeconfig: '/x' }],
    ['both jwksUri and jwksFile', { mode: 'jwks', jwksUri: 'https://x/jwks', jwksFile: '/x' }],
    ['unknown key', { mode: 'jwks', audiences: [AUD] }],
  ])('refuses %s', (_name, config) => {
    expect(KubernetesConfigSchema.safeParse({ clusterName: 'prod', issuer: DEFAULT_ISSUER, audience: AUD, ...config }).success).toBe(false);
  });

  it('exposes issuer, audience and JWT token types for routing', () => {
    const p = jwksProvider();
    expect(p).toMatchObject({ type: 'kubernetes', issuer: k8s.issuer, audiences: [AUD], acceptedTokenTypes: JWT_TOKEN_TYPES });
  });
});

describe('kubernetes trust provider: happy paths', () => {
  it('jwks mode: verifies offline through discovery and maps subject and every attribute', async () => {
    const token = await mint();
    const last = k8s.last;
    const id = await jwksProvider().verify({ token, tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      kind: 'workload',
      provider: 'k8s-jwks',
      providerType: 'kubernetes',
      subject: 'k8s://prod/ns/agents/sa/planner',
      attributes: {
        cluster: 'prod',
        namespace: 'agents',
        service_account: 'planner',
        service_account_uid: last.serviceAccountUid,
        pod_name: last.pod!.name,
        pod_uid: last.pod!.uid,
        node_name: 'worker-3',
      },
    });
    expect(id.kind === 'workload' && id.claims.sub).toBe('system:serviceaccount:agents:planner');
    expect(Math.abs(id.expiresAt.getTime() - (now() + 600) * 1000)).toBeLessThan(5_000);
    expect(k8s.calls.some((c) => c.path === 'public:/.well-known/openid-configuration')).toBe(true);
  });

  it('tokenreview mode: verifies offline, then asks the API server as the reviewer with our audience; identity from the answer', async () => {
    const before = k8s.tokenReviews.length;
    const token = await mint({ namespace: 'payments', serviceAccount: 'billing', node: null });
    const last = k8s.last;
    const id = await reviewProvider().verify({ token, tokenType: JWT }, ctx());
    expect(id).toMatchObject({
      subject: 'k8s://prod/ns/payments/sa/billing',
      attributes: {
        cluster: 'prod',
        namespace: 'payments',
        service_account: 'billing',
        service_account_uid: last.serviceAccountUid,
        pod_name: last.pod!.name,
        pod_uid: last.pod!.uid,
      },
    });
    expect(id.kind === 'workload' && id.attributes.node_name).toBeUndefined();
    expect(k8s.tokenReviews.length).toBe(before + 1);
    const call = k8s.tokenReviews.at(-1)!;
    expect(call).toMatchObject({
      auth: 'reviewer',
      status: 201,
      body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [AUD] } },
    });
    expect(call.contentType).toMatch(/^application\/json/);
  });

  it('tokenreview mode binds the identity from the review answer, not from the token', async () => {
    const token = await mint();
    k8s.tamperReview((st) => {
      const user = st.user as { uid: string; extra: Record<string, string[]> };
      return { ...st, user: { ...user, uid: 'uid-from-review', extra: { ...user.extra, 'authentication.kubernetes.io/pod-name': ['pod-from-review'] } } };
    });
    try {
      const id = await reviewProvider().verify({ token, tokenType: JWT }, ctx());
      expect(id).toMatchObject({ attributes: { service_account_uid: 'uid-from-review', pod_name: 'pod-from-review' } });
    } finally {
      k8s.tamperReview(null);
    }
  });

  it('tokenreview mode without JWKS (offlineCheck off) relies on the review alone', async () => {
    const token = await mint({ serviceAccount: 'runner' });
    const id = await onlineProvider().verify({ token, tokenType: JWT }, ctx());
    expect(id).toMatchObject({ subject: 'k8s://prod/ns/agents/sa/runner', attributes: { node_name: 'worker-3', pod_uid: k8s.last.pod!.uid } });
  });

  it('caches positive reviews only when reviewCacheTtl is set', async () => {
    const token = await mint();
    const count = () => k8s.tokenReviews.length;
    const uncached = reviewProvider();
    let before = count();
    await uncached.verify({ token, tokenType: JWT }, ctx());
    await uncached.verify({ token, tokenType: JWT }, ctx());
    expect(count() - before).toBe(2);
    const cached = reviewProvider({ reviewCacheTtl: '10s' });
    before = count();
    await cached.verify({ token, tokenType: JWT }, ctx());
    await cached.verify({ token, tokenType: JWT }, ctx());
    expect(count() - before).toBe(1);
  });

  it('accepts a token without exp only with allowNoExpiry', async () => {
    const token = await mint({ claims: { exp: undefined } });
    await expect(jwksProvider().verify({ token, tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    await expect(jwksProvider({ allowNoExpiry: true }).verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://prod/ns/agents/sa/planner' });
    await expect(onlineProvider({ allowNoExpiry: true }).verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://prod/ns/agents/sa/planner' });
  });
});

describe('kubernetes trust provider: two clusters on the default issuer', () => {
  let a: FakeKubernetesApi;
  let b: FakeKubernetesApi;
  beforeAll(async () => {
    [a, b] = await Promise.all([startFakeKubernetesApi({ issuer: DEFAULT_ISSUER }), startFakeKubernetesApi({ issuer: DEFAULT_ISSUER })]);
    secrets.push(a.reviewerToken, b.reviewerToken);
  });
  afterAll(async () => {
    await Promise.all([a.close(), b.close()]);
  });

  it('routes by audience and verifies each with its own cluster', async () => {
    const pa = kubernetesPlugin.create(
      'cluster-a',
      KubernetesConfigSchema.parse({ clusterName: 'a', issuer: DEFAULT_ISSUER, audience: 'sts-a', mode: 'jwks', jwksUri: a.publicJwksUri }),
      deps,
    );
    const pb = kubernetesPlugin.create(
      'cluster-b',
      KubernetesConfigSchema.parse({ clusterName: 'b', issuer: DEFAULT_ISSUER, audience: 'sts-b', mode: 'tokenreview', kubeconfig: b.kubeconfigPath, jwksUri: b.publicJwksUri }),
      deps,
    );
    const registry = createTrustRegistry([pa, pb]);
    const ta = await mint({ audiences: ['sts-a'], namespace: 'ns-a' }, a);
    const tb = await mint({ audiences: ['sts-b'], namespace: 'ns-b' }, b);
    const ra = registry.resolveFor(ta, JWT);
    const rb = registry.resolveFor(tb, JWT);
    expect([ra.name, rb.name]).toEqual(['cluster-a', 'cluster-b']);
    await expect(ra.verify({ token: ta, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://a/ns/ns-a/sa/planner', attributes: { cluster: 'a' } });
    await expect(rb.verify({ token: tb, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://b/ns/ns-b/sa/planner', attributes: { cluster: 'b' } });
    expect(b.tokenReviews.at(-1)!.body).toMatchObject({ spec: { audiences: ['sts-b'] } });

    // Cluster b minting a token for cluster a's audience: routed to a, refused by a's keys.
    const forged = await mint({ audiences: ['sts-a'] }, b);
    const r = registry.resolveFor(forged, JWT);
    expect(r.name).toBe('cluster-a');
    await expect(r.verify({ token: forged, tokenType: JWT }, ctx())).rejects.toBeInstanceOf(SubjectTokenRejected);
    // A token carrying neither audience has no provider; neither does a foreign issuer.
    const neither = await mint({ audiences: ['sts-c'] }, a);
    expect(() => registry.resolveFor(neither, JWT)).toThrow(/audience is not accepted/);
    const foreign = await mint({ audiences: ['sts-a'] });
    expect(() => registry.resolveFor(foreign, JWT)).toThrow(/not trusted/);
  });

  it('refuses to register two instances with the same issuer and audience', () => {
    const make = (name: string) =>
      kubernetesPlugin.create(name, KubernetesConfigSchema.parse({ clusterName: name, issuer: DEFAULT_ISSUER, audience: 'same', mode: 'jwks', jwksUri: a.publicJwksUri }), deps);
    expect(() => createTrustRegistry([make('x'), make('y')])).toThrow(/both claim issuer/);
  });
});

describe('kubernetes trust provider: key rotation and revocation', () => {
  it('verifies a new kid after the cluster rotates its keys, without a restart', async () => {
    const jwks = jwksProvider({ jwks: { cooldown: '1s' } });
    const review = reviewProvider({ jwks: { cooldown: '1s' } });
    await jwks.verify({ token: await mint(), tokenType: JWT }, ctx());
    await review.verify({ token: await mint(), tokenType: JWT }, ctx());
    const oldKid = k8s.kid;
    const newKid = await k8s.rotateKeys({ retire: true });
    expect(newKid).not.toBe(oldKid);
    await new Promise((r) => setTimeout(r, 1_100));
    const token = await mint();
    await expect(jwks.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://prod/ns/agents/sa/planner' });
    await expect(review.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ subject: 'k8s://prod/ns/agents/sa/planner' });
  });

  it('an admin key refresh picks up a rotation at once', async () => {
    const jwks = jwksProvider({ jwks: { cooldown: '10m' } });
    await jwks.verify({ token: await mint(), tokenType: JWT }, ctx());
    await k8s.rotateKeys();
    await jwks.refreshKeys!();
    await expect(jwks.verify({ token: await mint(), tokenType: JWT }, ctx())).resolves.toMatchObject({ kind: 'workload' });
  });

  it('a deleted pod: tokenreview refuses; jwks (documented limitation) still accepts until exp', async () => {
    const token = await mint();
    const podUid = k8s.last.pod!.uid;
    const review = reviewProvider();
    const jwks = jwksProvider();
    await expect(review.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ attributes: { pod_uid: podUid } });
    k8s.deletePod(podUid);
    const err = await review.verify({ token, tokenType: JWT }, ctx()).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SubjectTokenRejected);
    expect((err as StsError).detail).toMatchObject({ reason: 'TokenReview: not authenticated', cluster: 'prod' });
    await expect(jwks.verify({ token, tokenType: JWT }, ctx())).resolves.toMatchObject({ attributes: { pod_uid: podUid } });
  });
});

type Mode = 'jwks' | 'review' | 'online';
type Expect = 'allow' | { cls: typeof SubjectTokenRejected | typeof UpstreamUnavailable; detail: Record<string, unknown> };
const rejected = (detail: Record<string, unknown>): Expect => ({ cls: SubjectTokenRejected, detail });
const upstream = (cause: string, extra: Record<string, unknown> = {}): Expect => ({ cls: UpstreamUnavailable, detail: { cause, ...extra } });

interface Row {
  name: string;
  token: () => Promise<string>;
  expect: Partial<Record<Mode, Expect>>;
  /** Builds the provider for a mode (default: the standard ones). */
  provider?: (mode: Mode) => Promise<TrustProvider>;
  before?: () => void;
  after?: () => void;
}

const claimsFor = (o: Record<string, unknown> = {}) => ({
  iss: k8s.issuer,
  aud: [AUD],
  sub: 'system:serviceaccount:agents:planner',
  iat: now(),
  exp: now() + 600,
  'kubernetes.io': { namespace: 'agents', serviceaccount: { name: 'planner', uid: 'u-1' } },
  ...o,
});
const reviewKubeconfig = (o: { server?: string; context?: string }) => reviewProvider({ kubeconfig: k8s.kubeconfigFor(o), apiTimeout: '1s' });
const onlineKubeconfig = (o: { server?: string; context?: string }) => onlineProvider({ kubeconfig: k8s.kubeconfigFor(o), apiTimeout: '1s' });
const viaKubeconfig = (o: { server?: string; context?: string }) => async (mode: Mode) => (mode === 'review' ? reviewKubeconfig(o) : onlineKubeconfig(o));

const rows: Row[] = [
  {
    name: 'wrong audience',
    token: () => mint({ audiences: ['https://kubernetes.default.svc'] }),
    expect: {
      jwks: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' }),
      review: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'aud' }),
      online: rejected({ reason: 'audience mismatch' }),
    },
  },
  {
    name: 'expired',
    token: () => mint({ claims: { iat: now() - 1300, nbf: now() - 1300, exp: now() - 700 } }),
    expect: { jwks: rejected({ code: 'ERR_JWT_EXPIRED' }), review: rejected({ code: 'ERR_JWT_EXPIRED' }), online: rejected({ reason: 'token expired' }) },
  },
  {
    name: 'not yet valid',
    token: () => mint({ claims: { nbf: now() + 600, exp: now() + 1200 } }),
    expect: {
      jwks: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'nbf' }),
      review: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'nbf' }),
      online: rejected({ reason: 'token not yet valid' }),
    },
  },
  {
    name: 'foreign cluster issuer',
    token: async () => {
      const other = await startFakeKubernetesApi();
      try {
        return await mint({}, other);
      } finally {
        await other.close();
      }
    },
    expect: { jwks: rejected({ code: 'ERR_JWKS_NO_MATCHING_KEY' }), review: rejected({ code: 'ERR_JWKS_NO_MATCHING_KEY' }), online: rejected({ reason: 'issuer mismatch' }) },
  },
  {
    name: 'tampered signature',
    token: async () => {
      const [h, p] = (await mint({ namespace: 'kube-system', serviceAccount: 'admin' })).split('.');
      const sig = (await mint()).split('.')[2];
      return `${h}.${p}.${sig}`;
    },
    expect: {
      jwks: rejected({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }),
      review: rejected({ code: 'ERR_JWS_SIGNATURE_VERIFICATION_FAILED' }),
      online: rejected({ reason: 'TokenReview: not authenticated' }),
    },
  },
  {
    name: 'alg none',
    token: async () => new UnsecuredJWT(claimsFor()).encode(),
    expect: {
      jwks: rejected({ code: 'ERR_JOSE_ALG_NOT_ALLOWED' }),
      review: rejected({ code: 'ERR_JOSE_ALG_NOT_ALLOWED' }),
      online: rejected({ reason: 'TokenReview: not authenticated' }),
    },
  },
  {
    name: 'no exp (allowNoExpiry off)',
    token: () => mint({ claims: { exp: undefined } }),
    expect: {
      jwks: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'exp' }),
      review: rejected({ code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'exp' }),
      online: rejected({ reason: 'token has no exp' }),
    },
  },
  {
    name: 'subject is not a service account (a user token from the same issuer)',
    token: () => mint({ claims: { sub: 'oidc:alice@example.com' } }),
    expect: { jwks: rejected({ reason: 'not a service-account token' }), review: rejected({ reason: 'not a service-account token' }), online: rejected({ reason: 'not a service-account token' }) },
  },
  {
    name: 'sub disagrees with the kubernetes.io claim',
    token: () => mint({ claims: { sub: 'system:serviceaccount:kube-system:admin' } }),
    expect: { jwks: rejected({ reason: 'sub does not match the kubernetes.io claim' }) },
  },
  {
    name: 'TokenReview unauthenticated (service account deleted / pod gone)',
    token: async () => {
      const t = await mint();
      k8s.deletePod(k8s.last.pod!.uid);
      return t;
    },
    expect: { jwks: 'allow', review: rejected({ reason: 'TokenReview: not authenticated' }), online: rejected({ reason: 'TokenReview: not authenticated' }) },
  },
  {
    name: 'API server unreachable (closed port)',
    token: () => mint(),
    provider: async (mode) => viaKubeconfig({ server: `https://127.0.0.1:${await closedPort()}` })(mode),
    expect: { review: upstream('api-unreachable'), online: upstream('api-unreachable') },
  },
  {
    name: 'API server times out',
    token: () => mint(),
    provider: viaKubeconfig({}),
    before: () => k8s.setLatency(1_500),
    after: () => k8s.setLatency(0),
    expect: { review: upstream('api-unreachable'), online: upstream('api-unreachable') },
  },
  {
    name: 'reviewer token rejected (401)',
    token: () => mint(),
    provider: viaKubeconfig({ context: 'bad-token' }),
    expect: { review: upstream('own-credentials-rejected', { httpStatus: 401 }), online: upstream('own-credentials-rejected', { httpStatus: 401 }) },
  },
  {
    name: 'RBAC denied (403)',
    token: () => mint(),
    provider: viaKubeconfig({ context: 'no-rbac' }),
    expect: { review: upstream('own-credentials-rejected', { httpStatus: 403 }), online: upstream('own-credentials-rejected', { httpStatus: 403 }) },
  },
  {
    name: 'API server error (500)',
    token: () => mint(),
    before: () => k8s.fail('500'),
    after: () => k8s.fail(null),
    expect: { review: upstream('api-error', { httpStatus: 500 }), online: upstream('api-error', { httpStatus: 500 }) },
  },
  {
    name: 'API server answers malformed JSON',
    token: () => mint(),
    before: () => k8s.fail('malformed'),
    after: () => k8s.fail(null),
    expect: { review: upstream('api-error'), online: upstream('api-error') },
  },
  {
    name: 'TokenReview does not confirm our audience (API server ignored spec.audiences)',
    token: () => mint({ audiences: [AUD, k8s.issuer] }),
    before: () => k8s.fail('ignore-audiences'),
    after: () => k8s.fail(null),
    expect: { review: rejected({ reason: 'TokenReview: audience not confirmed' }), online: rejected({ reason: 'TokenReview: audience not confirmed' }) },
  },
  {
    name: 'TokenReview user is another service account than the token subject',
    token: () => mint(),
    before: () => k8s.tamperReview((st) => ({ ...st, user: { ...(st.user as object), username: 'system:serviceaccount:kube-system:admin' } })),
    after: () => k8s.tamperReview(null),
    expect: { review: rejected({ reason: 'TokenReview user differs from token subject' }), online: rejected({ reason: 'TokenReview user differs from token subject' }) },
  },
  {
    name: 'TokenReview answer omits authenticated (Go omitempty for false)',
    token: () => mint(),
    before: () => k8s.tamperReview(() => ({ user: {} })),
    after: () => k8s.tamperReview(null),
    expect: { review: rejected({ reason: 'TokenReview: not authenticated' }), online: rejected({ reason: 'TokenReview: not authenticated' }) },
  },
  {
    name: 'TokenReview answer authenticated but without a user uid',
    token: () => mint(),
    before: () => k8s.tamperReview((st) => ({ ...st, user: { ...(st.user as object), uid: undefined } })),
    after: () => k8s.tamperReview(null),
    expect: { review: upstream('api-error'), online: upstream('api-error') },
  },
  {
    name: 'cluster JWKS unreachable',
    token: () => mint(),
    provider: async (mode) => {
      const jwksUri = `http://127.0.0.1:${await closedPort()}/openid/v1/jwks`;
      return mode === 'jwks' ? jwksProvider({ jwksUri }) : reviewProvider({ jwksUri });
    },
    expect: { jwks: upstream('keys-unavailable'), review: upstream('keys-unavailable') },
  },
  {
    name: 'garbage instead of a JWT',
    token: async () => 'not-a-jwt',
    expect: { jwks: rejected({ code: 'ERR_JWS_INVALID' }), online: rejected({ reason: 'not a well-formed JWT' }) },
  },
  {
    name: 'oversized token',
    token: async () => `${(await mint()).slice(0, -1)}${'A'.repeat(17 * 1024)}`,
    expect: { jwks: rejected({ reason: 'token too large' }), online: rejected({ reason: 'token too large' }) },
  },
];

const defaultProvider = async (mode: Mode) => (mode === 'jwks' ? jwksProvider() : mode === 'review' ? reviewProvider() : onlineProvider());
const cases = rows.flatMap((row) => (Object.entries(row.expect) as [Mode, Expect][]).map(([mode, expected]) => ({ label: `${row.name} [${mode}]`, row, mode, expected })));

describe('kubernetes trust provider: bad input', () => {
  it.each(cases)('$label', async ({ row, mode, expected }) => {
    const p = await (row.provider ?? defaultProvider)(mode);
    const token = await row.token();
    row.before?.();
    let outcome: unknown;
    try {
      outcome = await p.verify({ token, tokenType: JWT }, ctx());
    } catch (e) {
      outcome = e;
    } finally {
      row.after?.();
    }
    if (expected === 'allow') {
      expect(outcome).toMatchObject({ kind: 'workload' });
      return;
    }
    expect(outcome).toBeInstanceOf(expected.cls);
    expect((outcome as StsError).detail).toMatchObject(expected.detail);
    // The caller only ever sees a generic message.
    expect((outcome as StsError).publicMessage).not.toContain(token.slice(0, 20));
  });

  it('logged each upstream failure with its cause and cluster, and never a token or the reviewer credentials', () => {
    const entries = logLines.map((l) => JSON.parse(l) as Record<string, unknown>);
    for (const cause of ['api-unreachable', 'own-credentials-rejected', 'api-error', 'keys-unavailable'])
      expect(entries.some((e) => e.cause === cause && e.cluster === 'prod' && (e.level as number) >= 40)).toBe(true);
    expect(minted.length).toBeGreaterThan(20);
    for (const line of logLines) {
      for (const t of minted) expect(line.includes(t) || line.includes(t.split('.')[2] || t)).toBe(false);
      for (const s of secrets) expect(line).not.toContain(s);
    }
  });
});
