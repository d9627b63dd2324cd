// A fake GitHub REST API for GitHub App installation tokens, as strict as GitHub where agent-sts
// depends on it (STANDARDS §8): the App JWT is verified (RS256 with the App's public key, iss = App
// ID, exp at most 10 minutes ahead), requested repositories/permissions must be within the
// installation's (else 422), tokens are real bearer tokens for GET /installation/repositories and die
// on DELETE /installation/token (401 afterwards). Tokens also work at GET /repos/{owner}/{repo}
// (404 for a repository the token does not cover) and PUT /repos/{owner}/{repo}/contents/{path}
// (403 without contents:write). GET /app/installations/{id} answers with the App JWT (401 without a
// valid one, 404 for another installation), showing `suspended_at` once the installation is
// suspended (token requests are then 403, as GitHub). Faults: failWith (status), delayMs (slow),
// malformed (200, not JSON).
import { randomBytes, type KeyObject } from 'node:crypto';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { decodeProtectedHeader, jwtVerify } from 'jose';
import { applyFaults, noFaults, type FaultControls } from './http.js';

export type GitHubLevel = 'read' | 'write' | 'admin';
const RANK: Record<GitHubLevel, number> = { read: 0, write: 1, admin: 2 };

export interface FakeRepo {
  id: number;
  name: string;
}

export interface FakeGitHubOptions {
  appId: number;
  /** The App's public key (GitHub keeps only this half). */
  publicKey: KeyObject;
  installationId: number;
  /** Repositories the installation can access. */
  repositories: FakeRepo[];
  /** Permissions the App was granted on the installation. */
  permissions: Record<string, GitHubLevel>;
  /** '' for api.github.com, '/api/v3' for GitHub Enterprise Server. */
  pathPrefix?: string;
  /** Lifetime of installation tokens (GitHub: 3600). */
  tokenTtlSeconds?: number;
  owner?: string;
}

export interface GitHubCall {
  method: string;
  path: string;
  /** Scheme of the Authorization header (`bearer`, `token`), lower-cased, or '' without one. */
  authScheme: string;
  body?: unknown;
  status: number;
}

interface IssuedToken {
  repositoryIds: number[];
  permissions: Record<string, GitHubLevel>;
  expiresAt: number;
  revoked: boolean;
}

export interface FakeGitHub {
  /** API root to configure as baseUrl (includes the path prefix). */
  baseUrl: string;
  calls: GitHubCall[];
  /** Every token handed out, in order. */
  tokens: string[];
  isLive(token: string): boolean;
  /** Fault injection (status, delay, malformed body): see FaultControls. */
  faults: FaultControls;
  /** Suspends (or with false unsuspends) the installation, as its owner can on GitHub. */
  setSuspended(suspended: boolean): void;
  close(): Promise<void>;
}

const json = (res: ServerResponse, status: number, body?: unknown) => {
  if (body === undefined) res.writeHead(status).end();
  else res.writeHead(status, { 'content-type': 'application/json; charset=utf-8' }).end(JSON.stringify(body));
};

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of req) chunks.push(c as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

export async function startFakeGitHub(opts: FakeGitHubOptions): Promise<FakeGitHub> {
  const prefix = opts.pathPrefix ?? '';
  const ttl = opts.tokenTtlSeconds ?? 3600;
  const owner = opts.owner ?? 'acme';
  const issued = new Map<string, IssuedToken>();
  const repoJson = (r: FakeRepo) => ({ id: r.id, name: r.name, full_name: `${owner}/${r.name}`, private: true });
  const calls: GitHubCall[] = [];
  const tokens: string[] = [];
  const state = noFaults();
  let suspendedAt: string | null = null;

  const authOf = (req: IncomingMessage): { scheme: string; credential: string } => {
    const m = /^(\S+)\s+(\S+)$/.exec(req.headers.authorization ?? '');
    return m ? { scheme: m[1]!.toLowerCase(), credential: m[2]! } : { scheme: '', credential: '' };
  };
  const liveToken = (req: IncomingMessage): IssuedToken | undefined => {
    const { scheme, credential } = authOf(req);
    if (scheme !== 'token' && scheme !== 'bearer') return undefined;
    const t = issued.get(credential);
    return t && !t.revoked && t.expiresAt > Date.now() ? t : undefined;
  };

  async function verifyAppJwt(req: IncomingMessage): Promise<string | null> {
    const { scheme, credential } = authOf(req);
    if (scheme !== 'bearer') return 'A JSON web token could not be decoded';
    try {
      if (decodeProtectedHeader(credential).alg !== 'RS256') return 'A JSON web token could not be decoded';
      const { payload } = await jwtVerify(credential, opts.publicKey, { algorithms: ['RS256'], clockTolerance: 0 });
      const now = Math.floor(Date.now() / 1000);
      if (String(payload.iss) !== String(opts.appId)) return "'Issuer' claim ('iss') must be an Integer";
      if (typeof payload.iat !== 'number' || payload.iat > now + 60) return "'Issued at' claim ('iat') must be an Integer representing a time in the past";
      if (typeof payload.exp !== 'number' || payload.exp > now + 600 + 5) return "'Expiration time' claim ('exp') is too far in the future";
      if (payload.exp - payload.iat > 600 + 60) return "'Expiration time' claim ('exp') is too far in the future";
      return null;
    } catch {
      return 'A JSON web token could not be decoded';
    }
  }

  async function handle(req: IncomingMessage, res: ServerResponse, call: GitHubCall): Promise<number> {
    const url = new URL(req.url ?? '/', 'http://x');
    const fault = await applyFaults(state, req, res);
    if (fault === 'handled') return res.statusCode;
    if (fault) return (json(res, fault, { message: 'Service Unavailable' }), fault);
    if (!req.headers['user-agent'])
      return (json(res, 403, { message: 'Request forbidden by administrative rules. Please make sure your request has a User-Agent header' }), 403);
    if (!url.pathname.startsWith(`${prefix}/`)) return (json(res, 404, { message: 'Not Found' }), 404);
    const path = url.pathname.slice(prefix.length);
    const route = `${req.method} ${path}`;

    const m = /^POST \/app\/installations\/(\d+)\/access_tokens$/.exec(route);
    if (m) {
      const raw = await readBody(req);
      let body: { repository_ids?: unknown; repositories?: unknown; permissions?: unknown } = {};
      try {
        body = raw ? JSON.parse(raw) : {};
      } catch {
        return (json(res, 400, { message: 'Problems parsing JSON' }), 400);
      }
      call.body = body;
      const jwtProblem = await verifyAppJwt(req);
      if (jwtProblem) return (json(res, 401, { message: jwtProblem, documentation_url: 'https://docs.github.com/rest' }), 401);
      if (Number(m[1]) !== opts.installationId) return (json(res, 404, { message: 'Not Found' }), 404);
      if (suspendedAt) return (json(res, 403, { message: 'This installation has been suspended', documentation_url: 'https://docs.github.com/rest' }), 403);

      let repos = opts.repositories;
      let selection: 'all' | 'selected' = 'all';
      if (body.repository_ids !== undefined || body.repositories !== undefined) {
        const ids = body.repository_ids ?? [];
        const names = body.repositories ?? [];
        if (!Array.isArray(ids) || !Array.isArray(names) || ids.length + names.length > 500)
          return (json(res, 422, { message: 'Invalid request.' }), 422);
        const wanted = new Set<FakeRepo>();
        for (const id of ids) {
          const r = opts.repositories.find((x) => x.id === id);
          if (!r) return (json(res, 422, { message: 'There is at least one repository that does not exist or is not accessible to the parent installation.' }), 422);
          wanted.add(r);
        }
        for (const n of names) {
          const r = opts.repositories.find((x) => x.name === n);
          if (!r) return (json(res, 422, { message: 'There is at least one repository that does not exist or is not accessible to the parent installation.' }), 422);
          wanted.add(r);
        }
        repos = [...wanted];
        selection = 'selected';
      }
      let permissions: Record<string, GitHubLevel> = { ...opts.permissions };
      if (body.permissions !== undefined) {
        if (typeof body.permissions !== 'object' || body.permissions === null) return (json(res, 422, { message: 'Invalid request.' }), 422);
        permissions = {};
        for (const [p, level] of Object.entries(body.permissions as Record<string, unknown>)) {
          const has = opts.permissions[p];
          if (!has || !Object.hasOwn(RANK, String(level)) || RANK[level as GitHubLevel] > RANK[has])
            return (json(res, 422, { message: 'The permissions requested are not granted to this installation.' }), 422);
          permissions[p] = level as GitHubLevel;
        }
        if (opts.permissions.metadata) permissions.metadata = 'read'; // GitHub always adds metadata:read
      }
      const token = `ghs_${randomBytes(27).toString('base64url').replace(/[-_]/g, 'x').slice(0, 36)}`;
      const expiresAt = (Math.floor(Date.now() / 1000) + ttl) * 1000;
      issued.set(token, { repositoryIds: repos.map((r) => r.id), permissions, expiresAt, revoked: false });
      tokens.push(token);
      json(res, 201, {
        token,
        expires_at: new Date(expiresAt).toISOString().replace(/\.\d{3}Z$/, 'Z'),
        permissions,
        repository_selection: selection,
        ...(selection === 'selected' ? { repositories: repos.map(repoJson) } : {}),
      });
      return 201;
    }

    const inst = /^GET \/app\/installations\/(\d+)$/.exec(route);
    if (inst) {
      const jwtProblem = await verifyAppJwt(req);
      if (jwtProblem) return (json(res, 401, { message: jwtProblem, documentation_url: 'https://docs.github.com/rest' }), 401);
      if (Number(inst[1]) !== opts.installationId) return (json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' }), 404);
      json(res, 200, {
        id: opts.installationId,
        account: { login: owner, type: 'Organization' },
        app_id: opts.appId,
        target_type: 'Organization',
        permissions: opts.permissions,
        repository_selection: 'selected',
        suspended_at: suspendedAt,
      });
      return 200;
    }

    if (route === 'DELETE /installation/token') {
      const t = liveToken(req);
      if (!t) return (json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' }), 401);
      t.revoked = true;
      return (json(res, 204), 204);
    }

    if (route === 'GET /installation/repositories') {
      const t = liveToken(req);
      if (!t) return (json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' }), 401);
      const repos = opts.repositories.filter((r) => t.repositoryIds.includes(r.id));
      json(res, 200, { total_count: repos.length, repository_selection: repos.length === opts.repositories.length ? 'all' : 'selected', repositories: repos.map(repoJson) });
      return 200;
    }

    // A repository through an installation token: 404 (not 403) for one the token does not cover, as GitHub.
    const repoRoute = /^(GET|PUT) \/repos\/([^/]+)\/([^/]+)(\/contents\/.+)?$/.exec(route);
    if (repoRoute && (repoRoute[1] === 'GET') === !repoRoute[4]) {
      const t = liveToken(req);
      if (!t) return (json(res, 401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest' }), 401);
      const r = repoRoute[2] === owner ? opts.repositories.find((x) => x.name === repoRoute[3] && t.repositoryIds.includes(x.id)) : undefined;
      if (!r) return (json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' }), 404);
      if (repoRoute[1] === 'GET') return (json(res, 200, repoJson(r)), 200);
      await readBody(req);
      const level = t.permissions.contents;
      if (!level || RANK[level] < RANK.write) return (json(res, 403, { message: 'Resource not accessible by integration', documentation_url: 'https://docs.github.com/rest' }), 403);
      return (json(res, 201, { content: { path: repoRoute[4]!.slice('/contents/'.length) } }), 201);
    }

    json(res, 404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest' });
    return 404;
  }

  const server = createServer((req, res) => {
    const call: GitHubCall = { method: req.method ?? 'GET', path: new URL(req.url ?? '/', 'http://x').pathname, authScheme: authOf(req).scheme, status: 0 };
    calls.push(call);
    handle(req, res, call)
      .then((status) => (call.status = status))
      .catch(() => {
        call.status = 500;
        if (!res.headersSent) json(res, 500, { message: 'Server Error' });
      });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}${prefix}`;
  return {
    baseUrl: base,
    calls,
    tokens,
    isLive: (token) => {
      const t = issued.get(token);
      return Boolean(t && !t.revoked && t.expiresAt > Date.now());
    },
    faults: state,
    setSuspended: (s) => {
      suspendedAt = s ? new Date().toISOString().replace(/\.\d{3}Z$/, 'Z') : null;
    },
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
