import { createPluginCatalog } from '../lib/plugin-registry.js';
import type { CredentialIssuerPlugin } from './credential-issuer.js';
import { agentStsJwtPlugin } from './agent-sts-jwt/agent-sts-jwt-issuer.js';
import { postgresPlugin } from './postgres/postgres-issuer.js';
import { mysqlIssuerPlugin } from './mysql/mysql-issuer.js';

/** type -> plugin. Adding an issuer = one folder + one line here. */
export const credentialIssuerCatalog = createPluginCatalog<CredentialIssuerPlugin<any>>([agentStsJwtPlugin, postgresPlugin, mysqlIssuerPlugin]); // eslint-disable-line @typescript-eslint/no-explicit-any
