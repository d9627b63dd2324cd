import { describe, expect, it } from 'vitest';
import type { Db } from '../storage/prisma-client.js';
import type { Logger } from '../log/logger.js';
import { ApprovalDecisionRefused, approvalRequestKey, createApprovalService, isApprover, type ApprovalRecord } from './approval-service.js';

const now = new Date('2026-01-01T00:00:00Z');
const row = (p: Partial<ApprovalRecord> = {}): ApprovalRecord => ({
  id: 'apr_1', state: 'pending', requestKey: 'k', workloadSubject: 'test://bot', humanSubject: 'alice', target: 'payouts', scopes: 'pay', policyId: 'p/agents',
  approvers: JSON.stringify(['group:leads', 'people:alice', 'bob']), createdAt: now, expiresAt: new Date(now.getTime() + 60_000), decidedBy: null, decidedAt: null, reason: null, ...p,
});

function service(r: ApprovalRecord) {
  const audits: unknown[] = [];
  const db = {
    policyApproval: {
      findUnique: async () => r,
      updateMany: async () => ({ count: 1 }),
    },
  } as unknown as Db;
  const s = createApprovalService({ db, audit: { append: async (w) => (audits.push(w), {} as never) }, clock: { now: () => now }, logger: {} as Logger, issuerUrl: () => 'https://sts' });
  return { s, audits };
}
const decider = (principal: string, groups: string[] = []) => ({ principal, groups, requestId: 'r1', now });

describe('approval rules', () => {
  it('keys a request by who, what and which rule, not by scope order', () => {
    const base = { workloadSubject: 'w', target: 't', scopes: ['b', 'a'], policyId: 'p' };
    expect(approvalRequestKey(base)).toBe(approvalRequestKey({ ...base, scopes: ['a', 'b'] }));
    expect(approvalRequestKey(base)).not.toBe(approvalRequestKey({ ...base, humanSubject: 'alice' }));
    expect(approvalRequestKey(base)).not.toBe(approvalRequestKey({ ...base, policyId: 'q' }));
  });

  it('matches approvers by exact principal, provider subject or group', () => {
    const approvers = ['bootstrap:ops', 'github:octo', 'carol', 'group:leads'];
    expect(isApprover(approvers, { principal: 'bootstrap:ops', groups: [] })).toBe(true);
    expect(isApprover(approvers, { principal: 'github:octo', groups: [] })).toBe(true);
    expect(isApprover(approvers, { principal: 'people:carol', groups: [] })).toBe(true);
    expect(isApprover(approvers, { principal: 'people:dave', groups: ['leads'] })).toBe(true);
    // A bare subject or a group never matches a bootstrap token or an OS user.
    expect(isApprover(approvers, { principal: 'bootstrap:carol', groups: [] })).toBe(false);
    expect(isApprover(approvers, { principal: 'cli:carol', groups: ['leads'] })).toBe(false);
    expect(isApprover(approvers, { principal: 'people:dave', groups: [] })).toBe(false);
  });

  it('refuses the person the request is for, even as a named approver', async () => {
    const { s, audits } = service(row());
    await expect(s.decide('apr_1', 'approve', 'mine', decider('people:alice'))).rejects.toMatchObject({ status: 403 });
    expect(audits).toHaveLength(1);
  });

  it('lets a member of a named group decide', async () => {
    const { s } = service(row());
    await expect(s.decide('apr_1', 'deny', 'no', decider('people:dave', ['leads']))).resolves.toMatchObject({ state: 'denied', decidedBy: 'people:dave' });
  });

  it('refuses to decide an expired request (409)', async () => {
    const { s } = service(row({ expiresAt: now }));
    const e = await s.decide('apr_1', 'approve', 'ok', decider('people:bob')).catch((x: unknown) => x);
    expect(e).toBeInstanceOf(ApprovalDecisionRefused);
    expect((e as ApprovalDecisionRefused).status).toBe(409);
  });
});
