import { KubeConfig, Observable, type RequestContext, type ResponseContext } from '@kubernetes/client-node';

/** agent-sts's own credentials for the cluster's API server: a kubeconfig file (optionally a context) or the pod's service account. */
export function loadKubeConfig(config: { clusterName: string; kubeconfig?: string; context?: string; inCluster?: boolean }): KubeConfig {
  const kc = new KubeConfig();
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
          return new Observable(Promise.resolve(rc));
        },
        post: (rc: ResponseContext) => new Observable(Promise.resolve(rc)),
      },
    ],
    middlewareMergeStrategy: 'append' as const,
  };
}
