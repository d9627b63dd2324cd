import { createPluginCatalog } from '../lib/plugin-registry.js';
import type { CredentialIssuerPlugin } from './credential-issuer.js';
import { agentStsJwtPlugin } from './agent-sts-jwt/agent-sts-jwt-issuer.js';
import { postgresPlugin } from './postgres/postgres-issuer.js';
import { mysqlIssuerPlugin } from './mysql/mysql-issuer.js';
import { githubAppIssuerPlugin } from './github-app/github-app-issuer.js';
import { vaultIssuerPlugin } from './vault/vault-issuer.js';
import { awsStsIssuerPlugin } from './aws-sts/aws-sts-issuer.js';

/** type -> plugin. Adding an issuer = one folder + one line here. */
export const credentialIssuerCatalog = createPluginCatalog<CredentialIssuerPlugin<any>>([agentStsJwtPlugin, postgresPlugin, mysqlIssuerPlugin, githubAppIssuerPlugin, vaultIssuerPlugin, awsStsIssuerPlugin]); // eslint-disable-line @typescript-eslint/no-explicit-any
