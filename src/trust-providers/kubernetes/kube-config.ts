import type * as K8s from '@kubernetes/client-node';
import type { KubeConfig, RequestContext, ResponseContext } from '@kubernetes/client-node';
import { lazyModule } from '../../lib/lazy-module.js';

/** The Kubernetes client, loaded when a kubernetes provider first needs its API server (~0.5 s of start-up otherwise). */
export const k8s = lazyModule<typeof K8s>('@kubernetes/client-node');

/** agent-sts's own credentials for the cluster's API server: a kubeconfig file (optionally a context) or the pod's service account. */
export function loadKubeConfig(config: { clusterName: string; kubeconfig?: string; context?: string; inCluster?: boolean }): KubeConfig {
  const kc = new (k8s().KubeConfig)();
  if (config.inCluster) kc.loadFromCluster();
  else {
    kc.loadFromFile(config.kubeconfig!);
    if (config.context) kc.setCurrentContext(config.context);
  }
  if (!kc.getCurrentCluster()) throw new Error(`kubernetes provider for cluster ${config.clusterName}: the kubeconfig has no current cluster`);
  return kc;
}

/** Per-call options of the generated API clients that abort the request after `ms`. */
export function apiTimeout(ms: number) {
  return {
    middleware: [
      {
        pre: (rc: RequestContext) => {
          rc.setSignal(AbortSignal.timeout(ms));
          return new (k8s().Observable)(Promise.resolve(rc));
        },
        post: (rc: ResponseContext) => new (k8s().Observable)(Promise.resolve(rc)),
      },
    ],
    middlewareMergeStrategy: 'append' as const,
  };
}
