/**
 * Watches a cluster's pods (all namespaces, or one watch per listed namespace) and reports each
 * pod that is gone: its object was DELETED, or it reached a terminal phase (Succeeded/Failed: no
 * container of it runs again, e.g. a finished Job or an evicted pod). A pod that is only
 * terminating (`metadata.deletionTimestamp` set) is not gone yet: it still runs its shutdown within
 * its grace period and may need its credentials for that.
 *
 * The usual list-then-watch: a list gives the pods and a resourceVersion, the watch continues from
 * there and every event moves the resourceVersion on. A watch that ends (the server's timeout, a
 * dropped connection) resumes from the last resourceVersion; one the server no longer has (410
 * Gone) is relisted, and a pod known before but missing from the new list is reported too — it
 * was deleted while nobody watched. Failures retry with jittered exponential backoff, forever,
 * logged at warn; nothing here ever throws to the caller. Needs RBAC `list` and `watch` on `pods`.
 */
import type { KubeConfig, V1PodList } from '@kubernetes/client-node';
import type { Logger } from '../../log/logger.js';
import { apiTimeout, k8s } from './kube-config.js';

export interface GonePod {
  uid: string;
  namespace: string;
  name: string;
  /** `deleted`, or the terminal phase (`Succeeded`, `Failed`). */
  how: 'deleted' | 'Succeeded' | 'Failed';
}

export interface PodWatcherOptions {
  kc: KubeConfig;
  /** Namespaces to watch; undefined: the whole cluster (one watch). */
  namespaces?: readonly string[];
  onGone(pod: GonePod): void;
  /**
   * Once per watch, after its first complete list: the uids of every pod it listed, when that
   * list began, and the namespace it covers (undefined: the whole cluster). A pod of that
   * namespace (or cluster) that existed before `asOf` and is not among them was gone before the
   * watch started (deleted while nothing watched).
   */
  onFirstList?(present: ReadonlySet<string>, asOf: Date, namespace: string | undefined): void;
  /** The clock for `asOf` (default: the system's). */
  now?: () => Date;
  logger: Logger;
  /** Timeout of a list request, ms. */
  listTimeoutMs: number;
  /** Retry delays (tests shorten them). */
  backoff?: { baseMs: number; capMs: number };
  /** How long the server keeps one watch open (it then ends it and we resume), seconds. */
  watchTimeoutSeconds?: number;
}

export const POD_WATCH_BACKOFF = { baseMs: 1_000, capMs: 30_000 } as const;
const LIST_PAGE = 500;
/** A watch that stayed open this long was healthy: the next failure starts the backoff afresh. */
const HEALTHY_AFTER_MS = 10_000;

interface Known {
  namespace: string;
  name: string;
  /** Already reported (terminal phase); its later DELETED is not reported again. */
  reported: boolean;
}

interface PodObject {
  metadata?: { uid?: string; name?: string; namespace?: string; resourceVersion?: string };
  status?: { phase?: string };
}

const TERMINAL = new Set(['Succeeded', 'Failed']);
const errorFields = (e: unknown) => {
  const err = e as { statusCode?: number; code?: number; message?: string; name?: string } | null;
  return { httpStatus: err?.statusCode ?? (typeof err?.code === 'number' ? err.code : undefined), error: (err?.message ?? err?.name ?? String(e)).slice(0, 200) };
};

/** Starts watching at once; `stop()` ends every watch and pending retry. */
export function startPodWatcher(opts: PodWatcherOptions): { stop(): void } {
  const loops = (opts.namespaces?.length ? opts.namespaces : [undefined]).map((ns) => watchLoop(ns, opts));
  return { stop: () => loops.forEach((l) => l.stop()) };
}

function watchLoop(namespace: string | undefined, opts: PodWatcherOptions) {
  const api = opts.kc.makeApiClient(k8s().CoreV1Api);
  const watch = new (k8s().Watch)(opts.kc);
  const backoff = opts.backoff ?? POD_WATCH_BACKOFF;
  const log = opts.logger.child({ watchNamespace: namespace ?? '*' });
  const path = namespace ? `/api/v1/namespaces/${encodeURIComponent(namespace)}/pods` : '/api/v1/pods';
  let known = new Map<string, Known>();
  let resourceVersion = '';
  let failures = 0;
  let stopped = false;
  let controller: AbortController | undefined;
  let retry: NodeJS.Timeout | undefined;
  let watchdog: NodeJS.Timeout | undefined;

  const report = (uid: string, k: Known, how: GonePod['how']) => {
    k.reported = true;
    try {
      opts.onGone({ uid, namespace: k.namespace, name: k.name, how });
    } catch (e) {
      log.error({ podUid: uid, err: errorFields(e) }, 'handling a gone pod failed');
    }
  };

  /** Records a pod as listed or watched; reports it once when it reached a terminal phase. */
  const observe = (into: Map<string, Known>, pod: PodObject) => {
    const uid = pod.metadata?.uid;
    if (!uid) return;
    const k = into.get(uid) ?? { namespace: pod.metadata?.namespace ?? namespace ?? '', name: pod.metadata?.name ?? '', reported: false };
    into.set(uid, k);
    const phase = pod.status?.phase;
    if (!k.reported && phase && TERMINAL.has(phase)) report(uid, k, phase as GonePod['how']);
  };

  let firstListDone = false;

  async function list(): Promise<void> {
    const asOf = (opts.now ?? (() => new Date()))();
    const previous = known;
    const listed = new Map<string, Known>();
    let next: string | undefined;
    let version = '';
    do {
      const page: V1PodList = namespace
        ? await api.listNamespacedPod({ namespace, limit: LIST_PAGE, _continue: next }, apiTimeout(opts.listTimeoutMs))
        : await api.listPodForAllNamespaces({ limit: LIST_PAGE, _continue: next }, apiTimeout(opts.listTimeoutMs));
      if (stopped) return;
      // Pods reported before keep their flag: a relist must not report them a second time.
      for (const pod of page.items ?? []) {
        const uid = pod.metadata?.uid;
        if (uid && previous.get(uid)?.reported) listed.set(uid, previous.get(uid)!);
        observe(listed, pod);
      }
      version ||= page.metadata?.resourceVersion ?? '';
      next = page.metadata?._continue || undefined;
    } while (next);
    // Only a complete list replaces what we know: a failed one must not hide a deletion from the next.
    known = listed;
    for (const [uid, k] of previous) if (!known.has(uid) && !k.reported) report(uid, k, 'deleted');
    resourceVersion = version;
    if (!firstListDone) {
      firstListDone = true;
      try {
        opts.onFirstList?.(new Set(known.keys()), asOf, namespace);
      } catch (e) {
        log.error({ err: errorFields(e) }, 'handling the first pod list failed');
      }
    }
  }

  function onEvent(type: string, obj: PodObject & { code?: number; message?: string }) {
    if (stopped) return;
    if (type === 'ERROR') {
      // 410 Gone: the server no longer has our resourceVersion; it ends the stream and we relist.
      if (obj.code === 410) resourceVersion = '';
      else log.warn({ httpStatus: obj.code, error: String(obj.message ?? '').slice(0, 200) }, 'pod watch reported an error');
      return;
    }
    if (type === 'ADDED' || type === 'MODIFIED') observe(known, obj);
    else if (type === 'DELETED') {
      const uid = obj.metadata?.uid;
      if (uid) {
        const k = known.get(uid) ?? { namespace: obj.metadata?.namespace ?? '', name: obj.metadata?.name ?? '', reported: false };
        known.delete(uid);
        if (!k.reported) report(uid, k, 'deleted');
      }
    }
    resourceVersion = obj.metadata?.resourceVersion || resourceVersion;
  }

  function schedule(ms: number) {
    if (stopped) return;
    retry = setTimeout(() => void run(), ms);
  }

  function fail(stage: 'list' | 'watch', e: unknown) {
    failures++;
    const delay = Math.round(Math.min(backoff.capMs, backoff.baseMs * 2 ** Math.min(failures - 1, 20)) * (0.5 + Math.random() / 2));
    const fields = { stage, attempt: failures, retryInMs: delay, ...errorFields(e) };
    if (fields.httpStatus === 401 || fields.httpStatus === 403)
      log.warn(fields, 'kubernetes API server refused agent-sts credentials for watching pods (needs list and watch on pods); retrying');
    else log.warn(fields, 'pod watch failed; retrying');
    schedule(delay);
  }

  async function run(): Promise<void> {
    if (stopped) return;
    if (!resourceVersion) {
      try {
        await list();
      } catch (e) {
        if (!stopped) fail('list', e);
        return;
      }
      if (stopped) return;
    }
    const timeoutSeconds = opts.watchTimeoutSeconds ?? 300 + Math.floor(Math.random() * 60);
    const startedAt = Date.now();
    let events = 0;
    let ended = false;
    const done = (err: unknown) => {
      if (ended) return;
      ended = true;
      clearTimeout(watchdog);
      controller = undefined;
      if (stopped) return;
      const healthy = events > 0 || Date.now() - startedAt >= HEALTHY_AFTER_MS;
      if (healthy) failures = 0;
      const status = errorFields(err).httpStatus;
      if (status === 410) {
        resourceVersion = '';
        return schedule(0);
      }
      if (err) return fail('watch', err);
      // Ended without error: the server's timeout or a dropped connection. Resume (right away if it was healthy).
      if (healthy) return schedule(0);
      fail('watch', new Error('watch ended at once'));
    };
    // The SDK hands out the watch's AbortController only once the server answered: until then
    // (and when a connection dies silently, with not even the server's timeout) give up by the clock.
    const giveUp = (ms: number, why: string, c?: AbortController) =>
      (watchdog = setTimeout(() => {
        c?.abort();
        done(new Error(why));
      }, ms));
    giveUp(opts.listTimeoutMs, 'watch did not connect in time');
    try {
      const c = await watch.watch(
        path,
        { resourceVersion, allowWatchBookmarks: true, timeoutSeconds },
        (type: string, obj: PodObject) => {
          events++;
          onEvent(type, obj);
        },
        done,
      );
      if (stopped || ended) c.abort();
      else {
        controller = c;
        clearTimeout(watchdog);
        giveUp((timeoutSeconds + 60) * 1000, 'watch silent past its timeout', c);
      }
    } catch (e) {
      done(e);
    }
  }

  retry = setTimeout(() => void run(), 0);
  return {
    stop() {
      stopped = true;
      clearTimeout(retry);
      clearTimeout(watchdog);
      controller?.abort();
    },
  };
}
