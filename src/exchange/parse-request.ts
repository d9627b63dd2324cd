import { Secret } from '../core/secret.js';
import { GrantTypeUnsupported, MalformedRequest, ScopeNotAllowed, TargetNotAllowed } from '../errors/sts-errors.js';
import { GRANT_TYPE_TOKEN_EXCHANGE, KNOWN_INPUT_TOKEN_TYPES, TOKEN_TYPE } from '../lib/urns.js';

/** A parsed RFC 8693 §2.1 request. OAuth wire names stay in this file and respond.ts. */
export interface ExchangeRequest {
  subjectToken: Secret<string>;
  subjectTokenType: string;
  actorToken?: Secret<string>;
  actorTokenType?: string;
  /** The single target (agent-sts accepts one resource or one audience per exchange). */
  resource?: string;
  audience?: string;
  scopes: string[];
  requestedTokenType?: string;
  /** agent-sts extension: desired lifetime in seconds (capped, never extended). */
  requestedLifetime?: number;
  /**
   * Sub-agent tokens only (requested_token_type = TOKEN_TYPE.subAgentToken): every resource and
   * audience sent — the targets the sub-agent may reach (RFC 8693 allows several).
   */
  subAgentTargets?: { resource?: string; audience?: string }[];
}

export type FormFields = Record<string, string[]>;

const SINGLE = ['grant_type', 'subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'scope', 'requested_token_type', 'requested_lifetime'] as const;
/** RFC 6749 §3.3 scope-token: %x21 / %x23-5B / %x5D-7E. */
const SCOPE_TOKEN = /^[\x21\x23-\x5B\x5D-\x7E]+$/;
const TOKEN_CHARS = /^[\x21-\x7E]+$/;

export function parseExchangeRequest(form: FormFields, opts: { maxTokenBytes: number }): ExchangeRequest {
  // RFC 6749 §3.1: parameters sent without a value are treated as omitted.
  const values = (name: string) => (form[name] ?? []).filter((v) => v !== '');
  const single = (name: (typeof SINGLE)[number]): string | undefined => {
    const v = values(name);
    if (v.length > 1) throw new MalformedRequest(`parameter ${name} is repeated`);
    return v[0];
  };
  for (const name of SINGLE) single(name);

  const grantType = single('grant_type');
  if (!grantType) throw new MalformedRequest('missing parameter grant_type');
  if (grantType !== GRANT_TYPE_TOKEN_EXCHANGE) throw new GrantTypeUnsupported('only the token-exchange grant type is supported');

  const subjectToken = single('subject_token');
  const subjectTokenType = single('subject_token_type');
  if (!subjectToken) throw new MalformedRequest('missing parameter subject_token');
  if (!subjectTokenType) throw new MalformedRequest('missing parameter subject_token_type');
  const actorToken = single('actor_token');
  const actorTokenType = single('actor_token_type');
  if (actorToken && !actorTokenType) throw new MalformedRequest('actor_token_type is required with actor_token');
  if (!actorToken && actorTokenType) throw new MalformedRequest('actor_token_type must not be sent without actor_token');

  for (const [name, token, type] of [
    ['subject_token', subjectToken, subjectTokenType],
    ['actor_token', actorToken, actorTokenType],
  ] as const) {
    if (token === undefined) continue;
    if (!KNOWN_INPUT_TOKEN_TYPES.includes(type!)) throw new MalformedRequest(`unsupported ${name}_type`);
    if (Buffer.byteLength(token) > opts.maxTokenBytes) throw new MalformedRequest(`${name} is too large`);
    if (!TOKEN_CHARS.test(token)) throw new MalformedRequest(`${name} contains characters a token cannot contain`);
  }

  const resources = values('resource');
  const audiences = values('audience');
  const subAgent = single('requested_token_type') === TOKEN_TYPE.subAgentToken;
  if (!subAgent && resources.length + audiences.length > 1)
    throw new TargetNotAllowed('request one target (one resource or one audience) per exchange');
  for (const resource of resources) {
    let url: URL;
    try {
      url = new URL(resource);
    } catch {
      throw new TargetNotAllowed('resource must be an absolute URI');
    }
    if (url.hash || resource.includes('#')) throw new TargetNotAllowed('resource must not contain a fragment');
  }
  const resource = subAgent ? undefined : resources[0];

  const scopeRaw = single('scope');
  const scopes = scopeRaw === undefined ? [] : [...new Set(scopeRaw.split(' ').filter(Boolean))];
  if (scopeRaw !== undefined && (scopes.length === 0 || !scopes.every((s) => SCOPE_TOKEN.test(s))))
    throw new ScopeNotAllowed('scope is malformed');

  const requestedTokenType = single('requested_token_type');
  if (requestedTokenType !== undefined && !requestedTokenType.startsWith('urn:'))
    throw new MalformedRequest('requested_token_type must be a token type URI');
  if (requestedTokenType === TOKEN_TYPE.refreshToken) throw new MalformedRequest('agent-sts never issues refresh tokens');

  const lifetimeRaw = single('requested_lifetime');
  let requestedLifetime: number | undefined;
  if (lifetimeRaw !== undefined) {
    if (!/^[1-9]\d{0,7}$/.test(lifetimeRaw)) throw new MalformedRequest('requested_lifetime must be a positive number of seconds');
    requestedLifetime = Number(lifetimeRaw);
  }

  return {
    subjectToken: new Secret(subjectToken),
    subjectTokenType,
    actorToken: actorToken !== undefined ? new Secret(actorToken) : undefined,
    actorTokenType,
    resource,
    audience: subAgent ? undefined : audiences[0],
    scopes,
    requestedTokenType,
    requestedLifetime,
    ...(subAgent ? { subAgentTargets: [...resources.map((r) => ({ resource: r })), ...audiences.map((a) => ({ audience: a }))] } : {}),
  };
}
