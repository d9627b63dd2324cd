// The kubernetes provider's `watchPods`: configuration, the instance on identities, and the pod
// watch through the real @kubernetes/client-node against the fake API server (list + watch,
// DELETED and terminal phases, dropped connections, 410 Gone, refused credentials, close).
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { startFakeKubernetesApi, type FakeKubernetesApi } from '../fakes/kubernetes-api.js';
import { kubernetesPlugin, KubernetesConfigSchema } from '../../src/trust-providers/kubernetes/kubernetes-provider.js';
import { startPodWatcher, type GonePod } from '../../src/trust-providers/kubernetes/pod-watcher.js';
import { loadKubeConfig } from '../../src/trust-providers/kubernetes/kube-config.js';
import { createProviderSet } from '../../src/trust-providers/provider-set.js';
import type { InstanceRow } from '../../src/lib/instance-set.js';
import type { Db } from '../../src/storage/prisma-client.js';
import type { TrustProvider } from '../../src/trust-providers/trust-provider.js';
import { validateConfig } from '../../src/config/load-config.js';
import { testProviderDeps } from '../support/provider-deps.js';
import { createLogger } from '../../src/log/logger.js';
import { JWT_TOKEN_TYPES } from '../../src/lib/urns.js';

const AUD = 'https://sts.example.internal';
const JWT = JWT_TOKEN_TYPES[0]!;
const ctx = () => ({ requestId: 'test', now: new Date() });
const logLines: string[] = [];
const logger = createLogger({ level: 'debug', destination: { write: (l: string) => void logLines.push(l) } });

let k8s: FakeKubernetesApi;
const minted: string[] = [];
const mint = async (o: Parameters<FakeKubernetesApi['mint']>[0] = {}) => {
  const t = await k8s.mint({ audiences: [AUD], ...o });
  minted.push(t);
  return t;
};
const toClose: { close?(): void; stop?(): void }[] = [];

beforeAll(async () => {
  k8s = await startFakeKubernetesApi();
});
afterEach(() => {
  for (const c of toClose.splice(0)) (c.close ?? c.stop)!.call(c);
});
afterAll(async () => {
  await k8s.close();
  // No token, and none of agent-sts's own API credentials, in any log line.
  const all = logLines.join('\n');
  for (const s of [...minted, k8s.reviewerToken, k8s.noRbacToken]) expect(all).not.toContain(s);
});

async function until(what: string, cond: () => boolean | Promise<boolean>, ms = 5_000): Promise<void> {
  const end = Date.now() + ms;
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`timed out waiting for: ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** A provider with watchPods whose gone instances are collected. */
function watchingProvider(name: string, extra: Record<string, unknown> = {}) {
  const gone: { instance: string; reason: string }[] = [];
  const listed: { prefix: string; present: string[]; reason: string; scope?: { subjectPrefix?: string } }[] = [];
  const config = KubernetesConfigSchema.parse({
    clusterName: 'prod', issuer: k8s.issuer, audience: AUD, mode: 'jwks', jwksUri: k8s.publicJwksUri,
    kubeconfig: k8s.kubeconfigPath, watchPods: { enabled: true }, ...extra,
  });
  const provider = kubernetesPlugin.create(
    name,
    config,
    testProviderDeps({
      logger,
      onInstanceGone: (instance, reason) => void gone.push({ instance, reason }),
      onInstancesListed: (prefix, present, _asOf, reason, scope) => void listed.push({ prefix, present: [...present].sort(), reason: reason(`${prefix}x`), ...(scope ? { scope } : {}) }),
    }),
  );
  toClose.push(provider);
  return { provider, gone, listed };
}

const base = { clusterName: 'prod', issuer: 'https://kubernetes.default.svc', audience: AUD };

describe('watchPods: configuration', () => {
  it.each([
    ['jwks mode without API credentials', { mode: 'jwks', watchPods: { enabled: true } }, /watchPods needs the API server/],
    ['jwks mode with both kubeconfig and inCluster', { mode: 'jwks', watchPods: { enabled: true }, kubeconfig: '/x', inCluster: true }, /watchPods needs the API server/],
    ['jwks mode with a context but no kubeconfig', { mode: 'jwks', watchPods: { enabled: true }, inCluster: true, context: 'c' }, /context needs kubeconfig/],
    ['an empty namespace list', { mode: 'tokenreview', inCluster: true, watchPods: { enabled: true, namespaces: [] } }, /namespaces/],
    ['an invalid namespace name', { mode: 'tokenreview', inCluster: true, watchPods: { enabled: true, namespaces: ['Agents'] } }, /namespace name/],
    ['an unknown key', { mode: 'tokenreview', inCluster: true, watchPods: { enabled: true, labelSelector: 'a=b' } }, /unrecognized key/i],
    ['no enabled flag', { mode: 'tokenreview', inCluster: true, watchPods: {} }, /enabled/],
    ['a kubeconfig in jwks mode when watchPods is off', { mode: 'jwks', kubeconfig: '/x', watchPods: { enabled: false } }, /only apply to mode tokenreview or watchPods/],
  ])('refuses %s', (_name, config, message) => {
    const r = KubernetesConfigSchema.safeParse({ ...base, ...config });
    expect(r.success).toBe(false);
    expect(r.error!.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('\n')).toMatch(message);
  });

  it.each([
    ['jwks mode with a kubeconfig', { mode: 'jwks', kubeconfig: '/x', watchPods: { enabled: true } }],
    ['jwks mode in the cluster, some namespaces', { mode: 'jwks', inCluster: true, watchPods: { enabled: true, namespaces: ['agents', 'batch-jobs'] } }],
    ['tokenreview mode (its reviewer credentials)', { mode: 'tokenreview', kubeconfig: '/x', watchPods: { enabled: true } }],
    ['jwks mode with watchPods off and no API credentials', { mode: 'jwks', watchPods: { enabled: false } }],
  ])('accepts %s', (_name, config) => {
    expect(KubernetesConfigSchema.safeParse({ ...base, ...config }).success).toBe(true);
  });

  it('the config file check names the provider and the problem', () => {
    expect(() =>
      validateConfig({
        storage: { url: 'file:/tmp/unused.db' },
        keys: { kek: { fromEnv: 'X' } },
        trustProviders: [{ name: 'k8s', type: 'kubernetes', config: { ...base, mode: 'jwks', watchPods: { enabled: true } } }],
      }),
    ).toThrow(/trustProviders\[0\].*\n?.*watchPods needs the API server/);
  });

  it('an unreadable kubeconfig is refused when the provider is built, not later in the watch', () => {
    const config = KubernetesConfigSchema.parse({ ...base, mode: 'jwks', kubeconfig: '/nonexistent/kubeconfig', watchPods: { enabled: true } });
    expect(() => kubernetesPlugin.create('k8s', config, testProviderDeps())).toThrow(/ENOENT|no such file/);
  });
});

describe('watchPods: the instance of an identity', () => {
  it('jwks mode: k8s-pod:<provider>:<pod uid> from the token\'s kubernetes.io.pod.uid', async () => {
    const token = await mint();
    const id = await watchingProvider('k8s-a').provider.verify({ token, tokenType: JWT }, ctx());
    expect(id.kind === 'workload' && id.instance).toBe(`k8s-pod:k8s-a:${k8s.last.pod!.uid}`);
  });

  it('tokenreview mode: the pod uid of the review answer, not of the token', async () => {
    const token = await mint();
    k8s.tamperReview((st) => {
      const user = st.user as { extra: Record<string, string[]> };
      return { ...st, user: { ...user, extra: { ...user.extra, 'authentication.kubernetes.io/pod-uid': ['uid-from-review'] } } };
    });
    try {
      const p = kubernetesPlugin.create('k8s-r', KubernetesConfigSchema.parse({ clusterName: 'prod', issuer: k8s.issuer, audience: AUD, mode: 'tokenreview', kubeconfig: k8s.kubeconfigPath }), testProviderDeps({ logger }));
      const id = await p.verify({ token, tokenType: JWT }, ctx());
      expect(id.kind === 'workload' && id.instance).toBe('k8s-pod:k8s-r:uid-from-review');
    } finally {
      k8s.tamperReview(null);
    }
  });

  it('a token bound to no pod has no instance', async () => {
    const token = await mint({ pod: null });
    const id = await watchingProvider('k8s-a').provider.verify({ token, tokenType: JWT }, ctx());
    expect(id.kind === 'workload' && 'instance' in id).toBe(false);
  });
});

describe('watchPods: the watch', () => {
  it('reports a deleted pod (and only that one) through onInstanceGone', async () => {
    await mint();
    const a = k8s.last.pod!.uid;
    await mint();
    const b = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-w');
    provider.start!();
    provider.start!(); // idempotent: one watch
    await until('the watch is open', () => k8s.openWatches() === 1);
    k8s.deletePod(a);
    await until('the deletion is reported', () => gone.length > 0);
    expect(gone).toEqual([{ instance: `k8s-pod:k8s-w:${a}`, reason: `pod ${a} deleted` }]);
    expect(k8s.pods().some((p) => p.uid === b)).toBe(true);
    // It listed first (as the API server's own credential holder), then watched from the list's resourceVersion.
    const reqs = k8s.podRequests.filter((r) => r.path === '/api/v1/pods');
    expect(reqs[0]).toMatchObject({ watch: false, auth: 'reviewer', status: 200 });
    expect(reqs[1]).toMatchObject({ watch: true, auth: 'reviewer', status: 200 });
    expect(reqs[1]!.resourceVersion).not.toBe('');
  });

  it('reports a pod that reached a terminal phase once, not again when it is deleted', async () => {
    await mint();
    const uid = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-t');
    provider.start!();
    await until('the watch is open', () => k8s.openWatches() === 1);
    k8s.setPodPhase(uid, 'Succeeded');
    await until('the terminal phase is reported', () => gone.length > 0);
    expect(gone).toEqual([{ instance: `k8s-pod:k8s-t:${uid}`, reason: `pod ${uid} terminated (Succeeded)` }]);
    k8s.deletePod(uid);
    await new Promise((r) => setTimeout(r, 300));
    expect(gone).toHaveLength(1);
  });

  it('without start() (CLI commands) or without onInstanceGone, nothing is watched', async () => {
    const before = k8s.podRequests.length;
    watchingProvider('k8s-cli'); // never started
    const config = KubernetesConfigSchema.parse({ ...base, issuer: k8s.issuer, mode: 'jwks', jwksUri: k8s.publicJwksUri, kubeconfig: k8s.kubeconfigPath, watchPods: { enabled: true } });
    const noCallback = kubernetesPlugin.create('k8s-nocb', config, testProviderDeps());
    toClose.push(noCallback);
    noCallback.start!();
    await new Promise((r) => setTimeout(r, 300));
    expect(k8s.podRequests.length).toBe(before);
  });

  it('re-establishes a dropped watch from its resourceVersion; a later deletion is still reported', async () => {
    await mint();
    const uid = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-d');
    provider.start!();
    await until('the watch is open', () => k8s.openWatches() === 1);
    const watchesBefore = k8s.podRequests.filter((r) => r.watch).length;
    k8s.dropWatches();
    await until('the watch is re-established', () => k8s.podRequests.filter((r) => r.watch).length > watchesBefore && k8s.openWatches() === 1);
    // Resumed, not relisted: the new watch carries the last resourceVersion seen.
    expect(k8s.podRequests.at(-1)).toMatchObject({ watch: true, status: 200 });
    expect(k8s.podRequests.at(-1)!.resourceVersion).not.toBe('');
    k8s.deletePod(uid);
    await until('the deletion is reported', () => gone.some((g) => g.instance === `k8s-pod:k8s-d:${uid}`));
    // The broken stream is logged at warn, naming the provider.
    expect(logLines.some((l) => l.includes('"provider":"k8s-d"') && l.includes('"level":40') && l.includes('pod watch failed; retrying'))).toBe(true);
  });

  it('410 Gone: relists, and a pod deleted while unwatched is reported from the difference', async () => {
    await mint();
    const uid = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-g');
    provider.start!();
    await until('the watch is open', () => k8s.openWatches() === 1);
    await until('the watch has seen the pod', () => k8s.podRequests.some((r) => r.watch && r.path === '/api/v1/pods'));
    await new Promise((r) => setTimeout(r, 100));
    const lists = k8s.podRequests.filter((r) => !r.watch).length;
    k8s.deletePod(uid, { unseen: true });
    k8s.compact();
    k8s.dropWatches();
    await until('the deletion is found by the relist', () => gone.some((g) => g.instance === `k8s-pod:k8s-g:${uid}`));
    expect(gone.find((g) => g.instance === `k8s-pod:k8s-g:${uid}`)!.reason).toBe(`pod ${uid} deleted`);
    expect(k8s.podRequests.filter((r) => !r.watch).length).toBeGreaterThan(lists);
  });

  it('namespaces: one watch per listed namespace; pods elsewhere are not reported', async () => {
    await mint({ namespace: 'agents' });
    const inside = k8s.last.pod!.uid;
    await mint({ namespace: 'other' });
    const outside = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-n', { watchPods: { enabled: true, namespaces: ['agents'] } });
    provider.start!();
    await until('the namespaced watch is open', () => k8s.openWatches() === 1 && k8s.podRequests.some((r) => r.watch && r.path === '/api/v1/namespaces/agents/pods'));
    k8s.deletePod(outside);
    k8s.deletePod(inside);
    await until('the deletion is reported', () => gone.length > 0);
    await new Promise((r) => setTimeout(r, 200));
    expect(gone.map((g) => g.instance)).toEqual([`k8s-pod:k8s-n:${inside}`]);
  });

  it('each watch\'s first list is reported for reconciliation: the whole cluster unscoped, a namespace scoped to its subjects', async () => {
    await mint({ namespace: 'agents' });
    const a = k8s.last.pod!.uid;
    await mint({ namespace: 'batch' });
    const b = k8s.last.pod!.uid;
    await mint({ namespace: 'other' });
    const all = watchingProvider('k8s-l1');
    all.provider.start!();
    await until('the cluster list is reported', () => all.listed.length === 1);
    expect(all.listed[0]).toMatchObject({ prefix: 'k8s-pod:k8s-l1:', reason: 'pod x gone before the watch started (not in the pod list)' });
    expect(all.listed[0]!.scope).toBeUndefined();
    expect(all.listed[0]!.present).toEqual(expect.arrayContaining([`k8s-pod:k8s-l1:${a}`, `k8s-pod:k8s-l1:${b}`]));
    all.provider.close!();

    const ns = watchingProvider('k8s-l2', { watchPods: { enabled: true, namespaces: ['agents', 'batch'] } });
    ns.provider.start!();
    await until('both namespace lists are reported', () => ns.listed.length === 2);
    const byScope = Object.fromEntries(ns.listed.map((l) => [l.scope?.subjectPrefix, l]));
    expect(Object.keys(byScope).sort()).toEqual(['k8s://prod/ns/agents/sa/', 'k8s://prod/ns/batch/sa/']);
    // each list holds its namespace's pods only (earlier tests left pods in `agents` too)
    expect(byScope['k8s://prod/ns/agents/sa/']!.present).toContain(`k8s-pod:k8s-l2:${a}`);
    expect(byScope['k8s://prod/ns/agents/sa/']!.present).not.toContain(`k8s-pod:k8s-l2:${b}`);
    expect(byScope['k8s://prod/ns/batch/sa/']!.present).toEqual([`k8s-pod:k8s-l2:${b}`]);
    expect(byScope['k8s://prod/ns/agents/sa/']!.reason).toBe('pod x gone before the watch started (not in the pod list of namespace agents)');
  });

  it('close() ends the watch; later deletions are not reported', async () => {
    await mint();
    const uid = k8s.last.pod!.uid;
    const { provider, gone } = watchingProvider('k8s-c');
    provider.start!();
    await until('the watch is open', () => k8s.openWatches() === 1);
    provider.close!();
    await until('the watch is closed', () => k8s.openWatches() === 0);
    k8s.deletePod(uid);
    await new Promise((r) => setTimeout(r, 300));
    expect(gone).toEqual([]);
  });

  it.each([
    ['no-rbac', 403],
    ['bad-token', 401],
  ])('credentials the API server refuses (%s): warns with the provider name and keeps retrying, never throws', async (context, status) => {
    const gone: GonePod[] = [];
    const name = `k8s-${context}`;
    const watcher = startPodWatcher({
      kc: loadKubeConfig({ clusterName: 'prod', kubeconfig: k8s.kubeconfigPath, context }),
      onGone: (p) => void gone.push(p),
      logger: logger.child({ provider: name }),
      listTimeoutMs: 2_000,
      backoff: { baseMs: 50, capMs: 200 },
    });
    toClose.push(watcher);
    await until('several attempts', () => k8s.podRequests.filter((r) => r.status === status).length >= 3);
    const warns = logLines.filter((l) => l.includes(`"provider":"${name}"`) && l.includes('"level":40'));
    expect(warns.length).toBeGreaterThanOrEqual(2);
    expect(JSON.parse(warns[0]!)).toMatchObject({ httpStatus: status, stage: 'list', msg: expect.stringMatching(/refused agent-sts credentials for watching pods/) });
    expect(gone).toEqual([]);
  });
});

describe('watchPods: the provider set', () => {
  /** The runtime provider table, in memory. */
  function memoryTable(rows: InstanceRow[]) {
    return {
      rows,
      aggregate: async () => ({ _count: { _all: rows.length }, _max: { updatedAt: rows.reduce<Date | null>((m, r) => (!m || r.updatedAt > m ? r.updatedAt : m), null) } }),
      findMany: async () => [...rows],
      create: async () => ({}),
      update: async () => ({}),
      delete: async () => ({}),
    };
  }

  it('starts the watches of the members in force, and stops a provider\'s watch when it is disabled', async () => {
    const config = { ...base, issuer: k8s.issuer, mode: 'jwks', jwksUri: k8s.publicJwksUri, kubeconfig: k8s.kubeconfigPath, watchPods: { enabled: true } };
    const table = memoryTable([{ name: 'k8s-rt', type: 'kubernetes', config: JSON.stringify(config), enabled: true, updatedAt: new Date(1000), updatedBy: 'test' }]);
    const set = createProviderSet({
      configured: [],
      db: { trustProvider: table } as unknown as Db,
      logger,
      depsFor: () => testProviderDeps({ logger, onInstanceGone: () => {} }),
    });
    toClose.push(set);
    await set.reload(true);
    expect(k8s.openWatches()).toBe(0);
    set.start();
    await until('the watch is open', () => k8s.openWatches() === 1);
    table.rows[0] = { ...table.rows[0]!, enabled: false, updatedAt: new Date(2000) };
    await set.reload();
    await until('the retired provider\'s watch is closed', () => k8s.openWatches() === 0);
    expect(set.list().map((p: TrustProvider) => p.name)).toEqual([]);
  });
});
