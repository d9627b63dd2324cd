import { createPluginCatalog } from '../lib/plugin-registry.js';
import type { TrustProviderPlugin } from './trust-provider.js';
import { oidcPlugin } from './oidc/oidc-provider.js';
import { githubActionsPlugin } from './github-actions/github-actions-provider.js';
import { gcpPlugin } from './gcp/gcp-provider.js';
import { azurePlugin } from './azure/azure-provider.js';
import { kubernetesPlugin } from './kubernetes/kubernetes-provider.js';
import { awsIamPlugin } from './aws-iam/aws-iam-provider.js';
import { awsEc2Plugin } from './aws-ec2/aws-ec2-provider.js';

/** type -> plugin. Adding a provider = one folder + one line here. */
export const trustProviderCatalog = createPluginCatalog<TrustProviderPlugin<any>>([oidcPlugin, githubActionsPlugin, gcpPlugin, azurePlugin, kubernetesPlugin, awsIamPlugin, awsEc2Plugin]); // eslint-disable-line @typescript-eslint/no-explicit-any
