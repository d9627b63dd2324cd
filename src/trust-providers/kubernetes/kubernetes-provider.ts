/**
 * Kubernetes service-account tokens (STANDARDS §4) as workload attestations.
 *
 * Config: `clusterName` names the cluster in the subject (`k8s://<cluster>/ns/<ns>/sa/<name>`);
 * `issuer` is the cluster's `--service-account-issuer`, matched exactly; `audience` is agent-sts's
 * own audience, which the pod's projected token must carry (the API server's default audience is
 * never enough: every workload in the cluster holds such a token). Several clusters left on the
 * default issuer are told apart by audience, so give each instance its own.
 *
 * Two modes:
 * - `jwks`: offline verification against the cluster's keys (`jwksUri`, `jwksFile`, or OIDC
 *   discovery from `issuer`). Cheap and needs no API credentials, but it cannot see revocation:
 *   a token whose pod, secret or service account was deleted stays valid until `exp`.
 * - `tokenreview`: every token (or a positive answer cached for at most `reviewCacheTtl`, <= 30s)
 *   is confirmed by the API server's TokenReview with `spec.audiences: [audience]`, which does see
 *   deleted pods and service accounts; the identity (namespace, service account, uids, pod, node)
 *   is taken from the review's answer, never from a later lookup. Needs `kubeconfig` or `inCluster`
 *   and RBAC `create` on `tokenreviews` (ClusterRole `system:auth-delegator`). With JWKS configured
 *   the token is first verified offline, so forged or expired tokens never reach the API server;
 *   without, only unverified shape checks (issuer, audience, expiry) run before the review, and the
 *   identity's `claims` are the decoded payload the review vouched for.
 *
 * `watchPods` (needs `kubeconfig` or `inCluster` in either mode, and RBAC `list` + `watch` on
 * `pods`): the broker watches the cluster's pods (pod-watcher.ts) and, when one is deleted or
 * reaches a terminal phase, reports its instance (`k8s-pod:<provider>:<pod uid>`, set on every
 * identity from a pod-bound token) through ProviderDeps.onInstanceGone, which ends its tasks.
 *
 * Only `system:serviceaccount:<ns>:<name>` subjects are accepted (the API server also
 * authenticates people's tokens). Tokens without `exp` (legacy secret-based ones) are refused
 * unless `allowNoExpiry`. Failures on agent-sts's side are UpstreamUnavailable with a cause
 * (api-unreachable, own-credentials-rejected, api-error, keys-unavailable); anything else about
 * the token is SubjectTokenRejected. Nothing is ever allowed when in doubt, and the token is never
 * logged (the cache is keyed by its SHA-256).
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';
import { decodeJwt, type JWTPayload } from 'jose';
import type { V1TokenReview } from '@kubernetes/client-node';
import { parseDuration } from '../../lib/clock.js';
import { JWT_TOKEN_TYPES } from '../../lib/urns.js';
import { SubjectTokenRejected, UpstreamUnavailable } from '../../errors/sts-errors.js';
import type { WorkloadIdentity } from '../../core/types.js';
import type { ProviderDeps, TrustProvider, TrustProviderPlugin, UpstreamCause } from '../trust-provider.js';
import { createOidcVerifier, expiryOf, OidcConfigSchema } from '../oidc/oidc-provider.js';
import { apiTimeout, k8s, loadKubeConfig } from './kube-config.js';
import { startPodWatcher } from './pod-watcher.js';

const NAMESPACE = /^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$/;
const CLUSTER_NAME = /^(?=.{1,253}$)[a-z0-9]([a-z0-9-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9-]*[a-z0-9])?)*$/;
const SA_SUBJECT = /^system:serviceaccount:([^:]+):([^:]+)$/;
/** Far above any real service-account token; bounds the work done on garbage (STANDARDS §11 #15). */
const MAX_TOKEN_BYTES = 16 * 1024;
const MAX_CACHE_ENTRIES = 10_000;
const EXTRA = 'authentication.kubernetes.io/';
const duration = OidcConfigSchema.shape.clockTolerance.unwrap();

export const KubernetesConfigSchema = z
  .object({
    /** Lowercase DNS-like name; part of every subject from this cluster. */
    clusterName: z.string().regex(CLUSTER_NAME, 'clusterName must be a lowercase DNS-like name'),
    /** The cluster's service-account issuer (`--service-account-issuer`), exact. */
    issuer: z.string().url(),
    /** agent-sts's dedicated audience; the token's `aud` must contain it. */
    audience: z.string().min(1),
    mode: z.enum(['jwks', 'tokenreview']),
    jwksUri: z.string().url().optional(),
    jwksFile: z.string().min(1).optional(),
    /** tokenreview: verify offline before the review (default: when jwksUri/jwksFile is set; discovery otherwise). */
    offlineCheck: z.boolean().optional(),
    /** tokenreview: path of a kubeconfig holding agent-sts's reviewer credentials. */
    kubeconfig: z.string().min(1).optional(),
    context: z.string().min(1).optional(),
    /** tokenreview: use the pod's own service account (agent-sts running in this cluster). */
    inCluster: z.boolean().optional(),
    allowNoExpiry: z.boolean().default(false),
    clockTolerance: duration.optional(),
    /** tokenreview: how long a positive review is reused (by token hash); 0 = never, at most 30s. */
    reviewCacheTtl: duration.default('0s'),
    /** Key fetching (timeout, refetch cooldown, cache age), as for the oidc provider. */
    jwks: OidcConfigSchema.shape.jwks.unwrap().optional(),
    /** tokenreview: API server request timeout. */
    apiTimeout: duration.default('5s'),
    /**
     * End the tasks of a pod once it is deleted or has terminated (watch on pods; needs kubeconfig
     * or inCluster, also in mode jwks, and RBAC list + watch on pods). `namespaces`: only these (default: all).
     */
    watchPods: z
      .object({
        enabled: z.boolean(),
        namespaces: z.array(z.string().regex(NAMESPACE, 'namespaces: each must be a namespace name')).min(1).optional(),
      })
      .strict()
      .optional(),
  })
  .strict()
  .superRefine((c, ctx) => {
    const problem = (message: string) => ctx.addIssue({ code: z.ZodIssueCode.custom, message });
    if (c.jwksUri && c.jwksFile) problem('use either jwksUri or jwksFile');
    if (parseDuration(c.reviewCacheTtl) > 30) problem('reviewCacheTtl must be at most 30s');
    const watching = c.watchPods?.enabled === true;
    if (c.mode === 'jwks') {
      if (c.offlineCheck === false) problem('mode jwks always verifies offline; offlineCheck: false needs mode tokenreview');
      if (watching) {
        if (!!c.kubeconfig === !!c.inCluster) problem('watchPods needs the API server: set exactly one of kubeconfig or inCluster: true');
        if (c.context && !c.kubeconfig) problem('context needs kubeconfig');
      } else if (c.kubeconfig || c.inCluster || c.context) problem('kubeconfig/inCluster/context only apply to mode tokenreview or watchPods');
    } else {
      if (!!c.kubeconfig === !!c.inCluster) problem('mode tokenreview needs exactly one of kubeconfig or inCluster: true');
      if (c.context && !c.kubeconfig) problem('context needs kubeconfig');
      if (c.offlineCheck === false && (c.jwksUri || c.jwksFile)) problem('jwksUri/jwksFile are only used with offlineCheck');
    }
  });

export type KubernetesConfig = z.infer<typeof KubernetesConfigSchema>;

/** Who the token belongs to, as the cluster vouches for it. */
interface ServiceAccountIdentity {
  namespace: string;
  serviceAccount: string;
  serviceAccountUid: string;
  podName?: string;
  podUid?: string;
  nodeName?: string;
}

const str = (v: unknown): string | undefined => (typeof v === 'string' && v !== '' ? v : undefined);
const obj = (v: unknown): Record<string, unknown> => (v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : {});
const first = (v: unknown): string | undefined => (Array.isArray(v) ? str(v[0]) : undefined);
const hashOf = (token: string) => createHash('sha256').update(token).digest('hex');

export const kubernetesPlugin: TrustProviderPlugin<KubernetesConfig> = {
  type: 'kubernetes',
  configSchema: KubernetesConfigSchema as z.ZodType<KubernetesConfig>,
  create(name, config, deps): TrustProvider {
    const cluster = config.clusterName;
    const log = deps.logger.child({ provider: name, providerType: 'kubernetes', cluster });
    const clockTolerance = config.clockTolerance !== undefined ? parseDuration(config.clockTolerance) : deps.clockTolerance;
    const offline = config.mode === 'jwks' || (config.offlineCheck ?? !!(config.jwksUri || config.jwksFile));
    const verifier = offline
      ? createOidcVerifier(
          OidcConfigSchema.parse({
            issuer: config.issuer,
            jwksUri: config.jwksUri,
            jwksFile: config.jwksFile,
            audience: config.audience,
            algorithms: ['RS256', 'ES256'],
            clockTolerance: config.clockTolerance,
            requiredClaims: ['kubernetes.io'],
            allowNoExpiry: config.allowNoExpiry,
            jwks: config.jwks,
          }),
          deps,
        )
      : undefined;
    const reviewer = config.mode === 'tokenreview' ? createReviewer(config, deps) : undefined;
    const instanceOf = (podUid: string) => `k8s-pod:${name}:${podUid}`;
    /** The workload subject of a service account; with an empty name, the prefix of every subject of the namespace. */
    const subjectOf = (namespace: string, serviceAccount: string) => `k8s://${cluster}/ns/${namespace}/sa/${serviceAccount}`;
    // Loaded now, so an unreadable kubeconfig is a config error; the watch starts only with start().
    const watchConfig = config.watchPods?.enabled ? loadKubeConfig(config) : undefined;
    let watcher: { stop(): void } | undefined;
    let closed = false;

    const reject = (reason: string, extra: Record<string, unknown> = {}): never => {
      log.info({ reason, ...extra }, 'kubernetes token rejected');
      throw new SubjectTokenRejected('subject token could not be verified', { detail: { provider: name, cluster, reason, ...extra } });
    };

    /** Offline verification, or (tokenreview without keys) unverified shape checks the review then vouches for. */
    async function checkToken(token: string): Promise<JWTPayload> {
      if (Buffer.byteLength(token) > MAX_TOKEN_BYTES) reject('token too large');
      if (verifier) {
        try {
          return await verifier.verify(token);
        } catch (e) {
          if (e instanceof UpstreamUnavailable) {
            log.warn({ cause: 'keys-unavailable', detail: e.detail }, 'kubernetes cluster keys unavailable');
            throw e;
          }
          if (e instanceof SubjectTokenRejected) log.info({ reason: 'jwt verification failed', detail: e.detail }, 'kubernetes token rejected');
          throw e;
        }
      }
      let claims: JWTPayload;
      try {
        claims = decodeJwt(token);
      } catch {
        return reject('not a well-formed JWT');
      }
      const nowS = deps.clock.now().getTime() / 1000;
      if (claims.iss !== config.issuer) reject('issuer mismatch');
      const aud = Array.isArray(claims.aud) ? claims.aud : [claims.aud];
      if (!aud.includes(config.audience)) reject('audience mismatch');
      if (claims.exp === undefined && !config.allowNoExpiry) reject('token has no exp');
      if (typeof claims.exp === 'number' && claims.exp + clockTolerance <= nowS) reject('token expired');
      if (typeof claims.nbf === 'number' && claims.nbf - clockTolerance > nowS) reject('token not yet valid');
      return claims;
    }

    /** The service account named by the token's verified claims (jwks mode). */
    function fromClaims(claims: JWTPayload): ServiceAccountIdentity {
      const m = SA_SUBJECT.exec(claims.sub ?? '');
      if (!m) return reject('not a service-account token');
      const k8s = obj(claims['kubernetes.io']);
      const sa = obj(k8s.serviceaccount);
      const id: ServiceAccountIdentity = {
        namespace: str(k8s.namespace) ?? '',
        serviceAccount: str(sa.name) ?? '',
        serviceAccountUid: str(sa.uid) ?? '',
        podName: str(obj(k8s.pod).name),
        podUid: str(obj(k8s.pod).uid),
        nodeName: str(obj(k8s.node).name),
      };
      if (!id.namespace || !id.serviceAccount || !id.serviceAccountUid) reject('kubernetes.io claim lacks namespace or service account');
      if (id.namespace !== m[1] || id.serviceAccount !== m[2]) reject('sub does not match the kubernetes.io claim');
      return id;
    }

    return {
      type: 'kubernetes',
      name,
      issuer: config.issuer,
      audiences: [config.audience],
      acceptedTokenTypes: JWT_TOKEN_TYPES,
      refreshKeys: async () => verifier?.source.refresh(),
      async verify(input, ctx) {
        const claims = await checkToken(input.token);
        if (!SA_SUBJECT.test(claims.sub ?? '')) reject('not a service-account token');
        let id: ServiceAccountIdentity;
        if (reviewer) {
          id = await reviewer.review(input.token, claims, reject, log);
        } else {
          id = fromClaims(claims);
        }
        const attributes: Record<string, string> = {
          cluster,
          namespace: id.namespace,
          service_account: id.serviceAccount,
          service_account_uid: id.serviceAccountUid,
        };
        if (id.podName) attributes.pod_name = id.podName;
        if (id.podUid) attributes.pod_uid = id.podUid;
        if (id.nodeName) attributes.node_name = id.nodeName;
        const identity: WorkloadIdentity = {
          ...(id.podUid ? { instance: instanceOf(id.podUid) } : {}),
          kind: 'workload',
          provider: name,
          providerType: 'kubernetes',
          subject: subjectOf(id.namespace, id.serviceAccount),
          attributes,
          claims,
          expiresAt: expiryOf(claims, new Date(ctx.now.getTime() + 300_000)),
        };
        return identity;
      },
      start() {
        const onInstanceGone = deps.onInstanceGone;
        if (!watchConfig || !onInstanceGone || watcher || closed) return;
        log.info({ namespaces: config.watchPods?.namespaces ?? 'all' }, 'watching pods: the tasks of a deleted or terminated pod end');
        watcher = startPodWatcher({
          kc: watchConfig,
          namespaces: config.watchPods?.namespaces,
          logger: log,
          listTimeoutMs: parseDuration(config.apiTimeout) * 1000,
          onGone: (pod) => {
            log.info({ podUid: pod.uid, namespace: pod.namespace, pod: pod.name, how: pod.how }, 'pod gone: ending its tasks');
            onInstanceGone(instanceOf(pod.uid), pod.how === 'deleted' ? `pod ${pod.uid} deleted` : `pod ${pod.uid} terminated (${pod.how})`);
          },
          // Each watch's first list also tells which pods went away while no replica watched
          // (broker down, upgrade): open tasks of this provider's pods that are not in it. A
          // namespace's list covers only the tasks of that namespace's service accounts (their
          // subject names it), so pods in namespaces that are not watched are never taken for gone.
          now: () => deps.clock.now(),
          ...(deps.onInstancesListed
            ? {
                onFirstList: (present: ReadonlySet<string>, asOf: Date, namespace: string | undefined) =>
                  deps.onInstancesListed!(
                    instanceOf(''),
                    new Set([...present].map(instanceOf)),
                    asOf,
                    (instance) => `pod ${instance.slice(instanceOf('').length)} gone before the watch started (not in the pod list${namespace === undefined ? '' : ` of namespace ${namespace}`})`,
                    namespace === undefined ? undefined : { subjectPrefix: subjectOf(namespace, '') },
                  ),
              }
            : {}),
        });
      },
      close() {
        closed = true;
        watcher?.stop();
        watcher = undefined;
      },
    };
  },
};

type Reject = (reason: string, extra?: Record<string, unknown>) => never;

/** TokenReview against the cluster's API server, with a short positive cache keyed by token hash. */
function createReviewer(config: KubernetesConfig, deps: ProviderDeps) {
  const api = loadKubeConfig(config).makeApiClient(k8s().AuthenticationV1Api);
  const timeoutMs = parseDuration(config.apiTimeout) * 1000;
  const cacheTtlMs = parseDuration(config.reviewCacheTtl) * 1000;
  const cache = new Map<string, { id: ServiceAccountIdentity; until: number }>();
  const withTimeout = apiTimeout(timeoutMs);

  const upstream = (cause: UpstreamCause, log: ProviderDeps['logger'], extra: Record<string, unknown>, e?: unknown): never => {
    const fields = { cause, stage: 'tokenreview', ...extra };
    if (cause === 'api-unreachable') log.warn(fields, 'kubernetes API server unreachable');
    else log.error(fields, cause === 'own-credentials-rejected' ? 'kubernetes API server refused agent-sts credentials' : 'kubernetes API server answered unusably');
    throw new UpstreamUnavailable('the workload platform could not be reached; try again later', {
      cause: e,
      detail: { cluster: config.clusterName, ...fields },
    });
  };

  async function call(token: string, log: ProviderDeps['logger']): Promise<V1TokenReview> {
    try {
      return await api.createTokenReview(
        { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'TokenReview', spec: { token, audiences: [config.audience] } } },
        withTimeout,
      );
    } catch (e) {
      if (e instanceof k8s().ApiException) {
        const status = e.code;
        if (status === 401 || status === 403) return upstream('own-credentials-rejected', log, { httpStatus: status });
        return upstream('api-error', log, { httpStatus: status });
      }
      const err = e as { name?: string; type?: string; code?: string };
      // node-fetch: AbortError on our timeout, FetchError type "system" for network/TLS failures.
      if (err.name === 'AbortError' || err.type === 'aborted' || err.type === 'system' || err.name === 'FetchError')
        return upstream('api-unreachable', log, { error: err.code ?? err.type ?? err.name });
      // The body could not be parsed or deserialized.
      return upstream('api-error', log, { error: err.name ?? 'unknown' });
    }
  }

  return {
    async review(token: string, claims: JWTPayload, reject: Reject, log: ProviderDeps['logger']): Promise<ServiceAccountIdentity> {
      const now = deps.clock.now().getTime();
      const key = cacheTtlMs > 0 ? hashOf(token) : '';
      const hit = key ? cache.get(key) : undefined;
      if (hit && hit.until > now) return hit.id;
      if (hit) cache.delete(key);

      const review = await call(token, log);
      const status = review?.status;
      if (!status || typeof status !== 'object') return upstream('api-error', log, { error: 'TokenReview answer has no status' });
      // `authenticated` is omitted when false (Go omitempty). The API server's own reason (e.g. a deleted pod) is safe to log: it never contains the token.
      if (status.authenticated !== true) return reject('TokenReview: not authenticated', { reviewError: String(status.error ?? '').slice(0, 300) });
      if (!(status.audiences ?? []).includes(config.audience)) return reject('TokenReview: audience not confirmed');
      const user = status.user ?? {};
      const m = SA_SUBJECT.exec(user.username ?? '');
      if (!m) return reject('TokenReview: not a service account');
      if (user.username !== claims.sub) return reject('TokenReview user differs from token subject');
      const extra = user.extra ?? {};
      const id: ServiceAccountIdentity = {
        namespace: m[1]!,
        serviceAccount: m[2]!,
        serviceAccountUid: str(user.uid) ?? '',
        podName: first(extra[`${EXTRA}pod-name`]),
        podUid: first(extra[`${EXTRA}pod-uid`]),
        nodeName: first(extra[`${EXTRA}node-name`]),
      };
      if (!id.serviceAccountUid) return upstream('api-error', log, { error: 'TokenReview answer has no user uid' });

      if (key) {
        const exp = typeof claims.exp === 'number' ? claims.exp * 1000 : Infinity;
        const until = Math.min(now + cacheTtlMs, exp);
        if (cache.size >= MAX_CACHE_ENTRIES) for (const [k, v] of cache) if (v.until <= now || cache.size >= MAX_CACHE_ENTRIES) cache.delete(k);
        if (until > now) cache.set(key, { id, until });
      }
      return id;
    },
  };
}
