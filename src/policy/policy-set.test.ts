import { describe, expect, it } from 'vitest';
import { validateConfig } from '../config/load-config.js';
import { createLogger } from '../log/logger.js';
import { createPolicyAdmin } from './policy-admin.js';
import { createPolicySet, type PolicyDocumentRow, type PolicyDocumentTable } from './policy-set.js';

const clock = { now: () => new Date('2026-03-03T10:00:00Z') };
const logger = createLogger({ level: 'silent' });

function memoryTable(): PolicyDocumentTable & { rows: Map<string, PolicyDocumentRow> } {
  const rows = new Map<string, PolicyDocumentRow>();
  let tick = 0;
  const at = () => new Date(Date.UTC(2026, 0, 1, 0, 0, ++tick));
  return {
    rows,
    aggregate: async () => ({ _count: { _all: rows.size }, _max: { updatedAt: [...rows.values()].map((r) => r.updatedAt).sort((a, b) => +b - +a)[0] ?? null } }),
    findMany: async () => [...rows.values()].sort((a, b) => a.name.localeCompare(b.name)),
    upsert: async ({ where, create, update }) => rows.set(where.name, { ...(rows.get(where.name) ?? create), ...update, updatedAt: at() }),
    delete: async ({ where }) => {
      if (!rows.delete(where.name)) throw Object.assign(new Error('not found'), { code: 'P2025' });
    },
  };
}

const config = validateConfig({
  storage: { url: 'file:unused.db' },
  keys: { kek: { fromEnv: 'UNUSED' } },
  trustProviders: [{ name: 'ci', type: 'oidc', config: { issuer: 'https://ci.example.com', audience: 'sts' } }],
  credentialIssuers: [{ name: 'tokens', type: 'agent-sts-jwt' }],
  targets: [{ name: 'reports', audiences: ['reports'], issuer: 'tokens', scopes: ['read'] }],
});

const doc = (when?: string) =>
  `apiVersion: agent-sts.dev/v2\nkind: Policy\nmetadata: { name: reports, owners: [x] }\nspec:\n  rules:\n    - name: r\n      workloads: [{ provider: ci, subject: 'a' }]\n${when ? `      when: '${when}'\n` : ''}      grants: [{ target: reports }]\n`;

describe('policy set', () => {
  it('keeps the previous engine when a stored document does not compile, and reports where and why', async () => {
    const table = memoryTable();
    const set = createPolicySet({ config, table, logger, clock });
    await set.reload(true);
    const empty = set.version;
    await table.upsert({ where: { name: 'reports' }, create: { name: 'reports', content: doc(), sha256: 'x', updatedBy: 't' }, update: { content: doc(), sha256: 'x', updatedBy: 't' } });
    expect((await set.reload()).changed).toBe(true);
    const good = set.version;
    expect(good).not.toBe(empty);
    await table.upsert({ where: { name: 'reports' }, create: { name: 'reports', content: '', sha256: '', updatedBy: 't' }, update: { content: doc('request.lifetime >'), sha256: 'y', updatedBy: 't' } });
    const r = await set.reload();
    expect(r.changed).toBe(false);
    expect(set.version).toBe(good);
    expect(set.lastError()?.problems).toEqual(['api:reports:8: spec.rules[0].when: condition does not parse: Unexpected token: EOF']);
  });

  it('refuses an upload that does not compile, a ceiling and a name mismatch before storing anything', async () => {
    const table = memoryTable();
    const set = createPolicySet({ config, table, logger, clock });
    const audited: unknown[] = [];
    const admin = createPolicyAdmin({ set, table, audit: { append: async (w) => (audited.push(w), {} as never) } });
    const ctx = { principal: 'p', requestId: 'r' };
    await expect(admin.put(ctx, 'reports', doc('nope.x == 1'))).rejects.toMatchObject({ status: 400 });
    await expect(admin.put(ctx, 'reports', 'apiVersion: agent-sts.dev/v2\nkind: PolicyCeiling\nmetadata: { name: reports, owners: [x] }\nspec: { limits: [] }\n')).rejects.toThrow(/PolicyCeiling cannot be uploaded/);
    await expect(admin.put(ctx, 'other', doc())).rejects.toThrow(/metadata.name must be "other"/);
    expect(table.rows.size).toBe(0);
    const put = await admin.put(ctx, 'reports', doc());
    expect(put).toMatchObject({ name: 'reports', version: set.version });
    expect(set.documents()).toContainEqual(expect.objectContaining({ name: 'reports', source: 'api', updatedBy: 'p' }));
    expect(audited).toEqual([{ event: expect.objectContaining({ action: 'admin.policy.put', outcome: 'allow', reason: `by p; sha256 ${put.sha256}` }) }]);
    await expect(admin.remove(ctx, 'missing')).rejects.toMatchObject({ status: 404 });
  });
});
