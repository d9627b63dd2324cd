// A fake HashiCorp Vault speaking the HTTP API (STANDARDS §9) as strictly as Vault does for the
// calls agent-sts makes: token auth (X-Vault-Token or Authorization: Bearer, 403 "permission
// denied" otherwise), namespaces (X-Vault-Namespace; tokens belong to one), dynamic secrets at
// `GET /v1/<mount>/creds/<role>` with the real response envelope, `sys/leases/{lookup,revoke,renew}`,
// AppRole login, `auth/token/renew-self` and `GET auth/token/lookup-self`, `{"errors":[...]}` bodies, 404 `{"errors":[]}` for
// unknown paths and 503 when sealed. Records every call (never the token values).
import { randomBytes, randomUUID } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { applyFaults, noFaults, type FaultControls } from './http.js';

export interface FakeVaultCall {
  method: string;
  path: string;
  namespace?: string;
  /** Whether the call carried a token header (the value is not recorded). */
  authenticated: boolean;
  body?: Record<string, unknown>;
}

export interface FakeLease {
  id: string;
  path: string;
  issueTime: Date;
  expireTime: Date;
  renewable: boolean;
  revoked: boolean;
  data: Record<string, unknown>;
}

export interface FakeVaultOptions {
  /** Tokens accepted (root-like, no expiry). */
  tokens?: string[];
  /** If set, every request must carry this X-Vault-Namespace. */
  namespace?: string;
  /** Secrets-engine mounts serving `<mount>/creds/<role>`. */
  mounts?: string[];
  /** `<mount>/creds/<role>` -> lease settings; paths under a mount but not listed get 400 unknown role. */
  roles?: Record<string, { leaseDuration: number; renewable?: boolean; data?: () => Record<string, unknown> }>;
  /** AppRole auth at `auth/<mount>/login`. */
  approle?: { mount?: string; roleId: string; secretId: string; tokenTtl: number };
}

export interface FakeVault {
  base: string;
  calls: FakeVaultCall[];
  leases: Map<string, FakeLease>;
  /** Tokens issued by AppRole logins, in order. */
  issuedTokens: string[];
  isAlive(leaseId: string): boolean;
  setSealed(sealed: boolean): void;
  /** Fault injection (status, delay, malformed body): see FaultControls. */
  faults: FaultControls;
  /** Invalidate a token (as `auth/token/revoke` would). */
  revokeToken(token: string): void;
  close(): Promise<void>;
}

const send = (res: ServerResponse, status: number, body?: unknown) => {
  if (status === 204) {
    res.writeHead(204).end();
    return;
  }
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' }).end(JSON.stringify(body));
};
const errors = (res: ServerResponse, status: number, ...messages: string[]) => send(res, status, { errors: messages });

async function readJson(req: IncomingMessage): Promise<Record<string, unknown> | 'invalid'> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  const text = Buffer.concat(chunks).toString('utf8');
  if (!text) return {};
  try {
    const v = JSON.parse(text) as unknown;
    return v && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, unknown>) : 'invalid';
  } catch {
    return 'invalid';
  }
}

const envelope = (extra: Record<string, unknown>) => ({
  request_id: randomUUID(),
  lease_id: '',
  renewable: false,
  lease_duration: 0,
  data: null,
  wrap_info: null,
  warnings: null,
  auth: null,
  ...extra,
});

const leaseSuffix = () => randomBytes(18).toString('base64url').replace(/[-_]/g, 'x').slice(0, 24);

export async function startFakeVault(opts: FakeVaultOptions = {}): Promise<FakeVault> {
  const rootTokens = new Set(opts.tokens ?? ['root-token']);
  const sessionTokens = new Map<string, { expireTime: number; ttl: number }>();
  const mounts = opts.mounts ?? ['database'];
  const roles = opts.roles ?? {};
  const calls: FakeVaultCall[] = [];
  const leases = new Map<string, FakeLease>();
  const issuedTokens: string[] = [];
  let sealed = false;
  const faults = noFaults();

  const tokenValid = (t: string | undefined) => {
    if (!t) return false;
    if (rootTokens.has(t)) return true;
    const s = sessionTokens.get(t);
    return Boolean(s && s.expireTime > Date.now());
  };
  const alive = (l: FakeLease | undefined): l is FakeLease => Boolean(l && !l.revoked && l.expireTime.getTime() > Date.now());

  const server = createServer((req, res) => {
    void (async () => {
      const url = new URL(req.url ?? '/', 'http://x');
      const method = (req.method ?? 'GET').toUpperCase();
      const namespace = req.headers['x-vault-namespace'] as string | undefined;
      const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
      const token = (req.headers['x-vault-token'] as string | undefined) ?? bearer;
      const body = method === 'GET' ? {} : await readJson(req);
      const call: FakeVaultCall = { method, path: url.pathname, authenticated: Boolean(token) };
      if (namespace !== undefined) call.namespace = namespace;
      if (body !== 'invalid' && Object.keys(body).length) call.body = Object.fromEntries(Object.entries(body).map(([k, v]) => [k, k === 'secret_id' ? '[recorded-redacted]' : v]));
      calls.push(call);

      const fault = await applyFaults(faults, req, res);
      if (fault === 'handled') return;
      if (fault) return errors(res, fault, 'internal error');
      if (sealed) return errors(res, 503, 'Vault is sealed');
      if (!url.pathname.startsWith('/v1/')) return errors(res, 404);
      if (body === 'invalid') return errors(res, 400, 'failed to parse JSON input');
      const path = url.pathname.slice('/v1/'.length).replace(/\/+$/, '');
      const write = method === 'PUT' || method === 'POST'; // Vault treats them alike
      const nsNorm = (s: string | undefined) => (s ?? '').replace(/\/+$/, '');
      if (nsNorm(namespace) !== nsNorm(opts.namespace)) return errors(res, 403, 'permission denied'); // tokens live in one namespace

      // ---- unauthenticated: AppRole login ----
      const approleMount = opts.approle?.mount ?? 'approle';
      if (opts.approle && path === `auth/${approleMount}/login`) {
        if (!write) return errors(res, 405, 'unsupported operation');
        if (body.role_id !== opts.approle.roleId || body.secret_id !== opts.approle.secretId) return errors(res, 400, 'invalid role or secret ID');
        const t = `hvs.${randomBytes(18).toString('base64url')}`;
        sessionTokens.set(t, { expireTime: Date.now() + opts.approle.tokenTtl * 1000, ttl: opts.approle.tokenTtl });
        issuedTokens.push(t);
        return send(res, 200, envelope({ auth: { client_token: t, accessor: randomUUID(), policies: ['default', 'agent-sts'], token_policies: ['default', 'agent-sts'], metadata: { role_name: 'agent-sts' }, lease_duration: opts.approle.tokenTtl, renewable: true, entity_id: randomUUID(), token_type: 'service', orphan: true } }));
      }

      if (!tokenValid(token)) return errors(res, 403, 'permission denied');

      if (path === 'auth/token/renew-self' && write) {
        const s = sessionTokens.get(token!);
        if (!s) return errors(res, 400, 'lease is not renewable');
        s.expireTime = Date.now() + s.ttl * 1000;
        return send(res, 200, envelope({ auth: { client_token: token, accessor: randomUUID(), policies: ['default', 'agent-sts'], lease_duration: s.ttl, renewable: true } }));
      }

      if (path === 'auth/token/lookup-self') {
        if (method !== 'GET') return errors(res, 405, 'unsupported operation');
        const s = sessionTokens.get(token!);
        const now = Date.now();
        // As Vault: the answer includes the token itself (`id`); callers must not log it.
        return send(res, 200, envelope({
          data: {
            accessor: randomUUID(), creation_time: Math.floor(now / 1000), creation_ttl: s?.ttl ?? 0, display_name: s ? 'approle' : 'root', entity_id: '',
            expire_time: s ? new Date(s.expireTime).toISOString() : null, explicit_max_ttl: 0, id: token, meta: null, num_uses: 0, orphan: true,
            path: s ? `auth/${approleMount}/login` : 'auth/token/root', policies: s ? ['default', 'agent-sts'] : ['root'], renewable: Boolean(s),
            ttl: s ? Math.max(0, Math.round((s.expireTime - now) / 1000)) : 0, type: 'service',
          },
        }));
      }

      if (path === 'sys/leases/lookup' && write) {
        const l = leases.get(String(body.lease_id ?? ''));
        if (!alive(l)) return errors(res, 400, 'invalid lease');
        return send(res, 200, envelope({
          data: { id: l.id, issue_time: l.issueTime.toISOString(), expire_time: l.expireTime.toISOString(), last_renewal: null, renewable: l.renewable, ttl: Math.max(0, Math.round((l.expireTime.getTime() - Date.now()) / 1000)) },
        }));
      }
      if (path === 'sys/leases/revoke' && write) {
        if (typeof body.lease_id !== 'string' || !body.lease_id) return errors(res, 400, 'missing lease ID');
        const l = leases.get(body.lease_id);
        if (l) l.revoked = true; // unknown or expired: nothing to revoke, still 204 (as Vault)
        return send(res, 204);
      }
      if (path === 'sys/leases/renew' && write) {
        const l = leases.get(String(body.lease_id ?? ''));
        if (!alive(l)) return errors(res, 400, 'lease not found');
        if (!l.renewable) return errors(res, 400, 'lease is not renewable');
        const increment = typeof body.increment === 'number' ? body.increment : 3600;
        l.expireTime = new Date(Date.now() + increment * 1000);
        return send(res, 200, envelope({ lease_id: l.id, renewable: true, lease_duration: increment }));
      }

      const mount = mounts.find((m) => path.startsWith(`${m}/`));
      if (mount && method === 'GET') {
        const rest = path.slice(mount.length + 1);
        if (!/^creds\/[^/]+$/.test(rest)) return errors(res, 404);
        const role = roles[path];
        if (!role) return errors(res, 400, `unknown role: ${rest.slice('creds/'.length)}`);
        const data = role.data?.() ?? { username: `v-token-${rest.slice(6, 20)}-${leaseSuffix().slice(0, 10)}`, password: `A1a-${randomBytes(15).toString('base64url')}` };
        const id = `${path}/${leaseSuffix()}`;
        const now = Date.now();
        leases.set(id, { id, path, issueTime: new Date(now), expireTime: new Date(now + role.leaseDuration * 1000), renewable: role.renewable ?? true, revoked: false, data });
        return send(res, 200, envelope({ lease_id: id, renewable: role.renewable ?? true, lease_duration: role.leaseDuration, data }));
      }
      return errors(res, 404);
    })().catch((e: unknown) => errors(res, 500, String(e)));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    base,
    calls,
    leases,
    issuedTokens,
    isAlive: (id) => alive(leases.get(id)),
    faults: faults,
    setSealed: (s) => {
      sealed = s;
    },
    revokeToken: (t) => {
      sessionTokens.delete(t);
      rootTokens.delete(t);
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
