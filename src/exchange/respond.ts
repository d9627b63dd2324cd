import type { ExchangeResult } from './exchange-service.js';

/** RFC 8693 §2.2.1 success body. Secrets are revealed here and nowhere else on the way out. */
export function exchangeResponse(r: ExchangeResult, now: Date) {
  const c = r.credential;
  const granted = r.grantedScopes.join(' ');
  return {
    access_token: c.accessToken.reveal(),
    issued_token_type: c.issuedTokenType,
    token_type: c.tokenType,
    expires_in: Math.max(0, Math.floor((c.expiresAt.getTime() - now.getTime()) / 1000)),
    ...(granted ? { scope: granted } : {}),
    ...(c.structured ? { credentials: c.structured.reveal() } : {}),
    task_id: r.taskId,
  };
}
