import { createPluginCatalog } from '../lib/plugin-registry.js';
import type { TrustProviderPlugin } from './trust-provider.js';
import { oidcPlugin } from './oidc/oidc-provider.js';
import { githubActionsPlugin } from './github-actions/github-actions-provider.js';
import { gcpPlugin } from './gcp/gcp-provider.js';
import { azurePlugin } from './azure/azure-provider.js';

/** type -> plugin. Adding a provider = one folder + one line here. */
export const trustProviderCatalog = createPluginCatalog<TrustProviderPlugin<any>>([oidcPlugin, githubActionsPlugin, gcpPlugin, azurePlugin]); // eslint-disable-line @typescript-eslint/no-explicit-any
