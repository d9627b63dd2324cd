// A fake Kubernetes API server for the kubernetes trust provider (tests and benchmarks):
// HTTPS with its own CA (node-forge), a kubeconfig for agent-sts's reviewer, service-account
// issuer discovery + JWKS (rotatable), tokens in the real bound-token layout (STANDARDS §4.1),
// a TokenReview endpoint as strict as the real one (§4.3), and pods: list and watch
// (`GET /api/v1/pods`, `/api/v1/namespaces/{ns}/pods`, `?watch=true|1`: chunked newline-delimited
// `{type, object}` events with resourceVersions, 410 Gone for a compacted one) of the pods the
// minted tokens are bound to, with the same credential checks as the TokenReview route.
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { randomUUID } from 'node:crypto';
import forge from 'node-forge';
import { createLocalJWKSet, exportJWK, generateKeyPair, jwtVerify, SignJWT, type CryptoKey, type JWK, type JWTPayload } from 'jose';

export interface FakeServiceAccountToken {
  namespace?: string;
  serviceAccount?: string;
  serviceAccountUid?: string;
  /** Bound pod (default: a fresh pod); `null` for a token not bound to a pod. */
  pod?: { name: string; uid: string } | null;
  node?: { name: string; uid: string } | null;
  audiences?: string[];
  /** Seconds of validity (default 600, the projected-volume minimum). */
  ttl?: number;
  /** Overrides/removals of top-level claims (`undefined` drops one), applied last. */
  claims?: Record<string, unknown>;
  kid?: string;
  key?: CryptoKey;
  alg?: 'RS256';
}

export interface TokenReviewCall {
  /** Which credential came with the request. */
  auth: 'reviewer' | 'no-rbac' | 'other' | 'none';
  contentType: string | undefined;
  body: unknown;
  status: number;
}

export interface PodWatchCall {
  auth: TokenReviewCall['auth'];
  path: string;
  /** The resourceVersion the watch started from ('' for none). */
  resourceVersion: string;
  status: number;
}

export interface FakePod {
  uid: string;
  name: string;
  namespace: string;
  phase: string;
  resourceVersion: string;
}

export interface FakeKubernetesApi {
  /** HTTPS API server base URL. */
  server: string;
  /** Plain-HTTP public discovery endpoint (a managed cluster's public OIDC issuer URL). */
  publicBase: string;
  issuer: string;
  /** JWKS served by the API server (HTTPS) and by the public endpoint (HTTP). */
  jwksUri: string;
  publicJwksUri: string;
  caPem: string;
  /** kubeconfig with contexts `reviewer` (current), `no-rbac` and `bad-token`. */
  kubeconfigPath: string;
  kubeconfigFor(opts: { server?: string; token?: string; context?: string }): string;
  /** Mints a service-account token in the real claim layout. */
  mint(opts?: FakeServiceAccountToken): Promise<string>;
  /** Identity of the last minted token's objects, for assertions. */
  last: { namespace: string; serviceAccount: string; serviceAccountUid: string; pod?: { name: string; uid: string }; node?: { name: string; uid: string } };
  /** Adds a key and signs with it from now on; old keys stay published unless `retire`. */
  rotateKeys(opts?: { retire?: boolean }): Promise<string>;
  kid: string;
  /**
   * Deletes a pod: TokenReview refuses its tokens and watchers get a DELETED event. `unseen`: no
   * event and none in the history (as if compacted away while no watch was open): only a relist sees it.
   */
  deletePod(uid: string, opts?: { unseen?: boolean }): void;
  /** Moves a pod to another phase (watchers get MODIFIED), e.g. `Succeeded`. */
  setPodPhase(uid: string, phase: string): void;
  /** The pods of minted tokens that are not deleted. */
  pods(): FakePod[];
  /** Open pod watches right now. */
  openWatches(): number;
  /** Drops every open pod watch connection (a network failure or an API server restart). */
  dropWatches(): void;
  /** Forgets the event history (etcd compaction): a watch resuming from before now gets 410 Gone. */
  compact(): void;
  /** Every pod list (`watch` false) and watch request. */
  podRequests: (PodWatchCall & { watch: boolean })[];
  /**
   * Makes the TokenReview endpoint misbehave: HTTP 500, a truncated 201 body, or
   * `ignore-audiences` (an old API server: checks only its own audience, ignoring spec.audiences).
   */
  fail(mode: FailureMode): void;
  setLatency(ms: number): void;
  /** Rewrites the TokenReview `status` before it is sent (a misbehaving or surprising API server); null to stop. */
  tamperReview(fn: ((status: Record<string, unknown>) => Record<string, unknown>) | null): void;
  tokenReviews: TokenReviewCall[];
  calls: { method: string; path: string }[];
  reviewerToken: string;
  noRbacToken: string;
  close(): Promise<void>;
}

export type FailureMode = '500' | 'malformed' | 'ignore-audiences' | null;

export interface FakeKubernetesApiOptions {
  /** Service-account issuer; default: the public HTTP endpoint (so discovery works). */
  issuer?: string;
  /** Audiences the API server accepts when a TokenReview has no spec.audiences. */
  apiAudiences?: string[];
}

let sharedTls: { caPem: string; certPem: string; keyPem: string } | undefined;

/** One CA + a 127.0.0.1/localhost server certificate, made once per process (node-forge). */
function tlsMaterial() {
  if (sharedTls) return sharedTls;
  const { pki, md } = forge;
  const caKeys = pki.rsa.generateKeyPair({ bits: 2048 });
  const ca = pki.createCertificate();
  ca.publicKey = caKeys.publicKey;
  ca.serialNumber = '01';
  ca.validity.notBefore = new Date(Date.now() - 60_000);
  ca.validity.notAfter = new Date(Date.now() + 86_400_000);
  const caName = [{ name: 'commonName', value: 'fake-kubernetes-ca' }];
  ca.setSubject(caName);
  ca.setIssuer(caName);
  ca.setExtensions([
    { name: 'basicConstraints', cA: true, critical: true },
    { name: 'keyUsage', keyCertSign: true, cRLSign: true, critical: true },
    { name: 'subjectKeyIdentifier' },
  ]);
  ca.sign(caKeys.privateKey, md.sha256.create());

  const keys = pki.rsa.generateKeyPair({ bits: 2048 });
  const cert = pki.createCertificate();
  cert.publicKey = keys.publicKey;
  cert.serialNumber = '02';
  cert.validity.notBefore = new Date(Date.now() - 60_000);
  cert.validity.notAfter = new Date(Date.now() + 86_400_000);
  cert.setSubject([{ name: 'commonName', value: 'kube-apiserver' }]);
  cert.setIssuer(caName);
  cert.setExtensions([
    { name: 'basicConstraints', cA: false },
    { name: 'keyUsage', digitalSignature: true, keyEncipherment: true, critical: true },
    { name: 'extKeyUsage', serverAuth: true },
    { name: 'subjectAltName', altNames: [{ type: 7, ip: '127.0.0.1' }, { type: 2, value: 'localhost' }] },
  ]);
  cert.sign(caKeys.privateKey, md.sha256.create());
  sharedTls = { caPem: pki.certificateToPem(ca), certPem: pki.certificateToPem(cert), keyPem: pki.privateKeyToPem(keys.privateKey) };
  return sharedTls;
}

export { closedPort } from './http.js';

const readBody = (req: IncomingMessage) =>
  new Promise<string>((resolve, reject) => {
    let data = '';
    req.setEncoding('utf8');
    req.on('data', (c: string) => (data += c));
    req.on('end', () => resolve(data));
    req.on('error', reject);
  });

const statusBody = (code: number, reason: string, message: string) => ({ kind: 'Status', apiVersion: 'v1', metadata: {}, status: 'Failure', message, reason, code });

export async function startFakeKubernetesApi(opts: FakeKubernetesApiOptions = {}): Promise<FakeKubernetesApi> {
  const tls = tlsMaterial();
  const keys: { kid: string; privateKey: CryptoKey; publicJwk: JWK }[] = [];
  const addKey = async () => {
    const kid = randomUUID().replace(/-/g, '').slice(0, 16);
    const { publicKey, privateKey } = await generateKeyPair('RS256', { extractable: true });
    keys.push({ kid, privateKey, publicJwk: { ...(await exportJWK(publicKey)), kid, alg: 'RS256', use: 'sig' } });
    return kid;
  };
  await addKey();
  const current = () => keys[keys.length - 1]!;
  const jwks = () => ({ keys: keys.map((k) => k.publicJwk) });

  const reviewerToken = `reviewer-${randomUUID()}`;
  const noRbacToken = `norbac-${randomUUID()}`;
  const deletedPods = new Set<string>();
  const pods = new Map<string, FakePod>();
  let revision = 1000;
  /** Events after `historyFrom`, for watches that resume from a resourceVersion. */
  let history: { rv: number; type: string; pod: FakePod }[] = [];
  let historyFrom = revision;
  const watchers = new Set<{ namespace?: string; res: ServerResponse }>();
  const podRequests: (PodWatchCall & { watch: boolean })[] = [];
  const tokenReviews: TokenReviewCall[] = [];
  const calls: { method: string; path: string }[] = [];
  let failure: FailureMode = null;
  let latency = 0;
  let tamper: ((status: Record<string, unknown>) => Record<string, unknown>) | null = null;
  let server = '';
  let publicBase = '';
  let issuer = '';

  const send = (res: ServerResponse, status: number, body: unknown) => {
    res.writeHead(status, { 'content-type': 'application/json' }).end(JSON.stringify(body));
  };

  const discovery = (jwksUri: string) => ({
    issuer,
    jwks_uri: jwksUri,
    response_types_supported: ['id_token'],
    subject_types_supported: ['public'],
    id_token_signing_alg_values_supported: ['RS256'],
  });

  async function tokenReview(req: IncomingMessage, res: ServerResponse) {
    const authz = req.headers.authorization;
    const auth: TokenReviewCall['auth'] = !authz
      ? 'none'
      : authz === `Bearer ${reviewerToken}`
        ? 'reviewer'
        : authz === `Bearer ${noRbacToken}`
          ? 'no-rbac'
          : 'other';
    const raw = await readBody(req);
    const contentType = req.headers['content-type'];
    let body: unknown;
    try {
      body = JSON.parse(raw);
    } catch {
      body = raw;
    }
    const call: TokenReviewCall = { auth, contentType, body, status: 0 };
    tokenReviews.push(call);
    const answer = (status: number, out: unknown) => {
      call.status = status;
      if (latency) setTimeout(() => !res.destroyed && send(res, status, out), latency);
      else send(res, status, out);
    };
    if (auth === 'none' || auth === 'other') return answer(401, statusBody(401, 'Unauthorized', 'Unauthorized'));
    if (auth === 'no-rbac')
      return answer(
        403,
        statusBody(403, 'Forbidden', 'tokenreviews.authentication.k8s.io is forbidden: User "system:serviceaccount:sts:agent-sts" cannot create resource "tokenreviews"'),
      );
    if (!contentType?.startsWith('application/json')) return answer(415, statusBody(415, 'UnsupportedMediaType', `the body of the request was in an unknown format`));
    const review = body as { apiVersion?: unknown; kind?: unknown; spec?: { token?: unknown; audiences?: unknown } };
    if (typeof review !== 'object' || review === null || review.apiVersion !== 'authentication.k8s.io/v1' || review.kind !== 'TokenReview')
      return answer(400, statusBody(400, 'BadRequest', 'expected authentication.k8s.io/v1 TokenReview'));
    if (typeof review.spec?.token !== 'string' || !review.spec.token) return answer(422, statusBody(422, 'Invalid', 'TokenReview.authentication.k8s.io is invalid: spec.token: Required value'));
    if (failure === '500') return answer(500, statusBody(500, 'InternalError', 'etcdserver: request timed out'));
    if (failure === 'malformed') {
      call.status = 201;
      res.writeHead(201, { 'content-type': 'application/json' }).end('{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRev');
      return;
    }
    const spec = { token: review.spec.token, ...(Array.isArray(review.spec.audiences) ? { audiences: review.spec.audiences as string[] } : {}) };
    const out = (status: Record<string, unknown>) =>
      answer(201, { kind: 'TokenReview', apiVersion: 'authentication.k8s.io/v1', metadata: { creationTimestamp: null }, spec, status: tamper ? tamper(status) : status });
    let claims: JWTPayload;
    try {
      ({ payload: claims } = await jwtVerify(spec.token, createLocalJWKSet(jwks()), { issuer, algorithms: ['RS256'] }));
    } catch {
      return out({ user: {}, error: '[invalid bearer token, square/go-jose: error in cryptographic primitive, token lookup failed]' });
    }
    const tokenAud = Array.isArray(claims.aud) ? claims.aud : typeof claims.aud === 'string' ? [claims.aud] : [];
    const wanted = (failure === 'ignore-audiences' ? undefined : spec.audiences) ?? opts.apiAudiences ?? [issuer];
    const audiences = wanted.filter((a) => tokenAud.includes(a));
    if (!audiences.length) return out({ user: {}, error: '[invalid bearer token, token audiences ' + JSON.stringify(tokenAud) + ' is invalid for the target audiences ' + JSON.stringify(wanted) + ']' });
    const sub = typeof claims.sub === 'string' ? claims.sub : '';
    const k8s = (claims['kubernetes.io'] ?? {}) as { namespace?: string; serviceaccount?: { name: string; uid: string }; pod?: { name: string; uid: string }; node?: { name: string; uid: string } };
    if (k8s.pod && deletedPods.has(k8s.pod.uid))
      return out({ user: {}, error: `[invalid bearer token, pod "${k8s.pod.name}" not found]` });
    const extra: Record<string, string[]> = {};
    if (k8s.pod) {
      extra['authentication.kubernetes.io/pod-name'] = [k8s.pod.name];
      extra['authentication.kubernetes.io/pod-uid'] = [k8s.pod.uid];
    }
    if (k8s.node) {
      extra['authentication.kubernetes.io/node-name'] = [k8s.node.name];
      extra['authentication.kubernetes.io/node-uid'] = [k8s.node.uid];
    }
    if (typeof claims.jti === 'string') extra['authentication.kubernetes.io/credential-id'] = [`JTI=${claims.jti}`];
    const ns = k8s.namespace ?? '';
    return out({
      authenticated: true,
      audiences,
      user: {
        username: sub,
        uid: k8s.serviceaccount?.uid ?? '',
        groups: sub.startsWith('system:serviceaccount:') ? ['system:serviceaccounts', `system:serviceaccounts:${ns}`, 'system:authenticated'] : ['system:authenticated'],
        extra,
      },
    });
  }

  const podObject = (p: FakePod, deleted = false) => ({
    kind: 'Pod',
    apiVersion: 'v1',
    metadata: { name: p.name, namespace: p.namespace, uid: p.uid, resourceVersion: p.resourceVersion, ...(deleted ? { deletionTimestamp: new Date().toISOString() } : {}) },
    spec: { serviceAccountName: p.name.split('-')[0] },
    status: { phase: p.phase },
  });
  const eventLine = (type: string, object: unknown) => `${JSON.stringify({ type, object })}\n`;
  const emit = (type: string, pod: FakePod) => {
    history.push({ rv: Number(pod.resourceVersion), type, pod: { ...pod } });
    for (const w of watchers) if (!w.namespace || w.namespace === pod.namespace) w.res.write(eventLine(type, podObject(pod, type === 'DELETED')));
  };
  const bump = (pod: FakePod) => void (pod.resourceVersion = String(++revision));

  /** GET pods: list, or (watch=true|1) a chunked stream of watch events, as the API server does. */
  function podsRoute(req: IncomingMessage, res: ServerResponse, url: URL, namespace: string | undefined) {
    const authz = req.headers.authorization;
    const auth: TokenReviewCall['auth'] = !authz ? 'none' : authz === `Bearer ${reviewerToken}` ? 'reviewer' : authz === `Bearer ${noRbacToken}` ? 'no-rbac' : 'other';
    const isWatch = url.searchParams.get('watch') === 'true' || url.searchParams.get('watch') === '1';
    const call = { auth, path: url.pathname, resourceVersion: url.searchParams.get('resourceVersion') ?? '', status: 200, watch: isWatch };
    podRequests.push(call);
    const refuse = (status: number, body: unknown) => {
      call.status = status;
      send(res, status, body);
    };
    if (auth === 'none' || auth === 'other') return refuse(401, statusBody(401, 'Unauthorized', 'Unauthorized'));
    if (auth === 'no-rbac') {
      const scope = namespace ? `in the namespace "${namespace}"` : 'at the cluster scope';
      return refuse(403, statusBody(403, 'Forbidden', `pods is forbidden: User "system:serviceaccount:sts:agent-sts" cannot ${isWatch ? 'watch' : 'list'} resource "pods" in API group "" ${scope}`));
    }
    const inScope = [...pods.values()].filter((p) => !namespace || p.namespace === namespace);
    if (!isWatch) {
      const limit = Number(url.searchParams.get('limit') ?? 0) || inScope.length || 1;
      const offset = Number(url.searchParams.get('continue') ?? 0) || 0;
      const page = inScope.slice(offset, offset + limit);
      const more = offset + limit < inScope.length;
      return send(res, 200, { kind: 'PodList', apiVersion: 'v1', metadata: { resourceVersion: String(revision), ...(more ? { continue: String(offset + limit) } : {}) }, items: page.map((p) => podObject(p)) });
    }
    res.writeHead(200, { 'content-type': 'application/json', 'transfer-encoding': 'chunked' });
    res.flushHeaders();
    const from = call.resourceVersion;
    if (from && from !== '0' && Number(from) < historyFrom) {
      res.end(eventLine('ERROR', statusBody(410, 'Expired', `too old resource version: ${from} (${historyFrom})`)));
      return;
    }
    // Without a resourceVersion a watch starts with the current state as ADDED events.
    if (!from || from === '0') for (const p of inScope) res.write(eventLine('ADDED', podObject(p)));
    else for (const e of history) if (e.rv > Number(from) && (!namespace || e.pod.namespace === namespace)) res.write(eventLine(e.type, podObject(e.pod, e.type === 'DELETED')));
    const w = { namespace, res };
    watchers.add(w);
    const timeout = Number(url.searchParams.get('timeoutSeconds') ?? 0);
    const timer = timeout > 0 ? setTimeout(() => res.end(), timeout * 1000) : undefined;
    res.on('close', () => {
      clearTimeout(timer);
      watchers.delete(w);
    });
  }

  const apiServer: HttpsServer = createHttpsServer({ key: tls.keyPem, cert: tls.certPem }, (req, res) => {
    const url = new URL(req.url ?? '/', 'https://x');
    const path = url.pathname;
    calls.push({ method: req.method ?? 'GET', path });
    const nsPods = /^\/api\/v1\/namespaces\/([a-z0-9-]+)\/pods$/.exec(path);
    if (req.method === 'GET' && (path === '/api/v1/pods' || nsPods)) return podsRoute(req, res, url, nsPods?.[1]);
    if (req.method === 'POST' && path === '/apis/authentication.k8s.io/v1/tokenreviews') {
      tokenReview(req, res).catch(() => send(res, 500, statusBody(500, 'InternalError', 'fake failed')));
      return;
    }
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') return send(res, 200, discovery(`${server}/openid/v1/jwks`));
    if (req.method === 'GET' && path === '/openid/v1/jwks') return send(res, 200, jwks());
    send(res, 404, statusBody(404, 'NotFound', 'the server could not find the requested resource'));
  });
  const publicServer: Server = createHttpServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    calls.push({ method: req.method ?? 'GET', path: `public:${path}` });
    if (req.method === 'GET' && path === '/.well-known/openid-configuration') return send(res, 200, discovery(`${publicBase}/openid/v1/jwks`));
    if (req.method === 'GET' && path === '/openid/v1/jwks') return send(res, 200, jwks());
    send(res, 404, { error: 'not found' });
  });
  await new Promise<void>((r) => apiServer.listen(0, '127.0.0.1', r));
  await new Promise<void>((r) => publicServer.listen(0, '127.0.0.1', r));
  server = `https://127.0.0.1:${(apiServer.address() as AddressInfo).port}`;
  publicBase = `http://127.0.0.1:${(publicServer.address() as AddressInfo).port}`;
  issuer = opts.issuer ?? publicBase;

  const dir = mkdtempSync(join(tmpdir(), 'fake-k8s-'));
  const caData = Buffer.from(tls.caPem).toString('base64');
  let n = 0;
  const kubeconfigFor = (o: { server?: string; token?: string; context?: string }) => {
    const users = { reviewer: reviewerToken, 'no-rbac': noRbacToken, 'bad-token': `bad-${randomUUID()}`, custom: o.token ?? reviewerToken };
    const yaml = [
      'apiVersion: v1',
      'kind: Config',
      'clusters:',
      '- name: fake',
      '  cluster:',
      `    server: ${o.server ?? server}`,
      `    certificate-authority-data: ${caData}`,
      'users:',
      ...Object.entries(users).flatMap(([name, token]) => [`- name: ${name}`, '  user:', `    token: ${token}`]),
      'contexts:',
      ...Object.keys(users).flatMap((name) => [`- name: ${name}`, '  context:', '    cluster: fake', `    user: ${name}`]),
      `current-context: ${o.context ?? (o.token ? 'custom' : 'reviewer')}`,
      '',
    ].join('\n');
    const file = join(dir, `kubeconfig-${n++}.yaml`);
    writeFileSync(file, yaml, { mode: 0o600 });
    return file;
  };
  const kubeconfigPath = kubeconfigFor({});

  const fake: FakeKubernetesApi = {
    server,
    publicBase,
    issuer,
    jwksUri: `${server}/openid/v1/jwks`,
    publicJwksUri: `${publicBase}/openid/v1/jwks`,
    caPem: tls.caPem,
    kubeconfigPath,
    kubeconfigFor,
    last: { namespace: '', serviceAccount: '', serviceAccountUid: '' },
    async mint(o = {}) {
      const now = Math.floor(Date.now() / 1000);
      const namespace = o.namespace ?? 'agents';
      const serviceAccount = o.serviceAccount ?? 'planner';
      const serviceAccountUid = o.serviceAccountUid ?? randomUUID();
      const pod = o.pod === null ? undefined : (o.pod ?? { name: `${serviceAccount}-7d9f-${randomUUID().slice(0, 5)}`, uid: randomUUID() });
      const node = o.node === null ? undefined : (o.node ?? { name: 'worker-3', uid: randomUUID() });
      const ttl = o.ttl ?? 600;
      const payload: Record<string, unknown> = {
        aud: o.audiences ?? [issuer],
        exp: now + ttl,
        iat: now,
        nbf: now,
        iss: issuer,
        jti: randomUUID(),
        sub: `system:serviceaccount:${namespace}:${serviceAccount}`,
        'kubernetes.io': {
          namespace,
          serviceaccount: { name: serviceAccount, uid: serviceAccountUid },
          ...(pod ? { pod } : {}),
          ...(node ? { node } : {}),
        },
        ...o.claims,
      };
      for (const k of Object.keys(payload)) if (payload[k] === undefined) delete payload[k];
      fake.last = { namespace, serviceAccount, serviceAccountUid, pod, node };
      if (pod && !pods.has(pod.uid) && !deletedPods.has(pod.uid)) {
        const p: FakePod = { uid: pod.uid, name: pod.name, namespace, phase: 'Running', resourceVersion: '' };
        bump(p);
        pods.set(pod.uid, p);
        emit('ADDED', p);
      }
      return new SignJWT(payload as JWTPayload).setProtectedHeader({ alg: o.alg ?? 'RS256', kid: o.kid ?? current().kid }).sign(o.key ?? current().privateKey);
    },
    async rotateKeys(o = {}) {
      const kid = await addKey();
      if (o.retire) keys.splice(0, keys.length - 1);
      return kid;
    },
    get kid() {
      return current().kid;
    },
    deletePod(uid, o = {}) {
      deletedPods.add(uid);
      const p = pods.get(uid);
      if (!p) return;
      pods.delete(uid);
      bump(p);
      if (!o.unseen) emit('DELETED', p);
    },
    setPodPhase(uid, phase) {
      const p = pods.get(uid);
      if (!p) throw new Error(`no pod ${uid}`);
      p.phase = phase;
      bump(p);
      emit('MODIFIED', p);
    },
    pods: () => [...pods.values()].map((p) => ({ ...p })),
    openWatches: () => watchers.size,
    dropWatches() {
      for (const w of watchers) w.res.socket?.destroy();
    },
    compact() {
      history = [];
      historyFrom = revision;
    },
    podRequests,
    fail: (mode) => void (failure = mode),
    setLatency: (ms) => void (latency = ms),
    tamperReview: (fn) => void (tamper = fn),
    tokenReviews,
    calls,
    reviewerToken,
    noRbacToken,
    async close() {
      apiServer.closeAllConnections();
      publicServer.closeAllConnections();
      await Promise.all([new Promise<void>((r) => apiServer.close(() => r())), new Promise<void>((r) => publicServer.close(() => r()))]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fake;
}
