import { describe, expect, it } from 'vitest';
import { mergeIdentity, mergeNetworks, mergeUse, MAX_NETWORKS, parseScopes, type IdentityRow, type UseRow } from './inventory-store.js';
import { reviewCsv, type AccessReview } from './access-review.js';

const t = (h: number) => new Date(Date.UTC(2026, 10, 25, h));

const row: IdentityRow = {
  subject: 'test://bot', kind: 'workload', providerName: 'ci', firstSeenAt: t(2), lastSeenAt: t(10), owner: 'team-a',
  attributes: '{"providerType":"oidc","attributes":{"env":"prod"}}', networks: '["10.0.0.0/24"]', disabledAt: null, disabledReason: null,
};

describe('merging one replica\'s inventory into the stored row', () => {
  it('keeps the earliest first-seen and the latest last-seen, whichever replica writes first', () => {
    const older = { kind: 'workload', subject: 'test://bot', providerName: 'ci', attributes: row.attributes, firstSeenAt: t(1), lastSeenAt: t(5), networks: ['10.0.0.0/24'] };
    expect(mergeIdentity(row, older)).toEqual({ firstSeenAt: t(1) });
    const newer = { ...older, firstSeenAt: t(11), lastSeenAt: t(12), attributes: '{"providerType":"oidc","attributes":{"env":"dev"}}', owner: 'team-b' };
    expect(mergeIdentity(row, newer)).toEqual({ lastSeenAt: t(12), attributes: newer.attributes, owner: 'team-b' });
  });

  it('lets an older observation change neither attributes nor owner, and keeps the owner when none is named', () => {
    expect(mergeIdentity(row, { kind: 'workload', subject: 'test://bot', providerName: 'other', attributes: '{}', owner: 'x', firstSeenAt: t(3), lastSeenAt: t(4), networks: [] })).toBeUndefined();
    expect(mergeIdentity(row, { kind: 'workload', subject: 'test://bot', providerName: 'ci', attributes: row.attributes, firstSeenAt: t(10), lastSeenAt: t(10), networks: [] })).toBeUndefined();
  });

  it('unites networks, newest last, at most MAX_NETWORKS', () => {
    expect(mergeIdentity(row, { kind: 'workload', subject: 'test://bot', providerName: 'ci', attributes: row.attributes, firstSeenAt: t(3), lastSeenAt: t(4), networks: ['10.0.1.0/24', '10.0.0.0/24'] })).toEqual({
      networks: '["10.0.0.0/24","10.0.1.0/24"]',
    });
    const many = Array.from({ length: MAX_NETWORKS + 5 }, (_, i) => `10.1.${i}.0/24`);
    const merged = mergeNetworks(['10.0.0.0/24'], many);
    expect(merged).toHaveLength(MAX_NETWORKS);
    expect(merged[merged.length - 1]).toBe(many[many.length - 1]);
  });

  it('adds uses, keeps the earliest first use, the latest last use and the latest use of each scope', () => {
    const use: UseRow = { subject: 'test://bot', target: 'api', firstUsedAt: t(2), lastUsedAt: t(8), uses: 10, scopes: JSON.stringify([{ scope: 'read', lastUsedAt: t(8).toISOString() }]) };
    const data = mergeUse(use, { subject: 'test://bot', target: 'api', firstUsedAt: t(1), lastUsedAt: t(6), uses: 3, scopes: new Map([['read', t(6)], ['write', t(5)]]) });
    expect(data).toEqual({
      uses: { increment: 3 },
      firstUsedAt: t(1),
      scopes: JSON.stringify([{ scope: 'read', lastUsedAt: t(8).toISOString() }, { scope: 'write', lastUsedAt: t(5).toISOString() }]),
    });
    expect(mergeUse(use, { subject: 'test://bot', target: 'api', firstUsedAt: t(3), lastUsedAt: t(7), uses: 0, scopes: new Map([['read', t(7)]]) })).toBeUndefined();
  });

  it('reads scopes stored as plain strings as used when the row was last used', () => {
    expect(parseScopes('["read", {"scope":"write","lastUsedAt":"2026-11-25T01:00:00.000Z"}, 7]', t(9))).toEqual(new Map([['read', t(9)], ['write', t(1)]]));
    expect(parseScopes('not json', t(9)).size).toBe(0);
  });
});

describe('reviewCsv', () => {
  it('writes RFC 4180 CSV, quoting where needed and defusing spreadsheet formulas', () => {
    const review: AccessReview = {
      identity: { kind: 'workload', subject: 'test://bot' }, since: t(0), until: t(12), policyVersion: 'sha256:x',
      rows: [
        { kind: 'workload', subject: 'test://bot', owner: 'a, b', target: 'api', scope: 'read', allowedBy: ['p/r1', 'p/r2'], lastUsedAt: t(3), usesInWindow: 2, decision: 'keep', note: 'said "yes"' },
        { kind: 'workload', subject: '=HYPERLINK("x")', owner: null, target: 'api', scope: null, allowedBy: [], lastUsedAt: null, usesInWindow: 0, decision: 'remove', note: '-1' },
      ],
    };
    const lines = reviewCsv(review).split('\r\n');
    expect(lines[0]).toBe('kind,subject,owner,target,scope,allowed_by,requires,last_used_at,uses_in_window,decision,note');
    expect(lines[1]).toBe(`workload,test://bot,"a, b",api,read,p/r1 p/r2,,${t(3).toISOString()},2,keep,"said ""yes"""`);
    expect(lines[2]).toBe(`workload,"'=HYPERLINK(""x"")",,api,,,,,0,remove,'-1`);
    expect(lines[3]).toBe('');
  });
});
