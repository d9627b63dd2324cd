export const GRANT_TYPE_TOKEN_EXCHANGE = 'urn:ietf:params:oauth:grant-type:token-exchange';

export const TOKEN_TYPE = {
  accessToken: 'urn:ietf:params:oauth:token-type:access_token',
  refreshToken: 'urn:ietf:params:oauth:token-type:refresh_token',
  idToken: 'urn:ietf:params:oauth:token-type:id_token',
  jwt: 'urn:ietf:params:oauth:token-type:jwt',
  saml1: 'urn:ietf:params:oauth:token-type:saml1',
  saml2: 'urn:ietf:params:oauth:token-type:saml2',
  postgresCredentials: 'urn:agent-sts:token-type:postgres-credentials',
  mysqlCredentials: 'urn:agent-sts:token-type:mysql-credentials',
  githubInstallationToken: 'urn:agent-sts:token-type:github-installation',
  /** STS session credentials; `credentials` = the `credential_process` JSON (Version 1). */
  awsCredentials: 'urn:agent-sts:token-type:aws-credentials',
  vaultSecret: 'urn:agent-sts:token-type:vault-secret',
  /**
   * requested_token_type for a sub-agent's agent token, derived from an agent token: its own child
   * task, strictly narrower scopes (`scope`, required), targets (`resource`/`audience`, several
   * allowed) and lifetime. The token issued is an ordinary agent token (access_token).
   */
  subAgentToken: 'urn:agent-sts:token-type:sub-agent-token',
  /** A SigV4-signed sts:GetCallerIdentity request (STANDARDS §5.1): base64url(JSON {method,url,body,headers}). */
  awsSigv4Gci: 'urn:agent-sts:token-type:aws-sigv4-gci',
  /** An EC2 instance identity document with its signature (STANDARDS §5.2): base64url(JSON {document,rsa2048|signature,...}). */
  awsEc2Identity: 'urn:agent-sts:token-type:aws-ec2-identity',
} as const;

/** Token types that carry a JWT we can verify (external attestations and our own agent tokens). */
export const JWT_TOKEN_TYPES: readonly string[] = [TOKEN_TYPE.jwt, TOKEN_TYPE.idToken, TOKEN_TYPE.accessToken];

/** Every token type URI agent-sts knows, so unknown ones are refused rather than guessed. */
export const KNOWN_INPUT_TOKEN_TYPES: readonly string[] = [...JWT_TOKEN_TYPES, TOKEN_TYPE.awsSigv4Gci, TOKEN_TYPE.awsEc2Identity];
