import type { Db } from '../storage/prisma-client.js';
import type { Clock } from '../lib/clock.js';
import type { Secret } from '../core/secret.js';
import type { CallContext, RevocationHandle } from '../core/types.js';
import type { AuditLog } from '../audit/audit-log.js';
import type { CredentialIssuer } from '../credential-issuers/credential-issuer.js';
import { unseal } from '../lib/crypto.js';
import { handleAad } from './task-service.js';
import { OWNING_STATES } from '../core/types.js';
import type { Telemetry } from '../telemetry/otel.js';
import { toAttributes } from '../telemetry/spans.js';


export interface DoctorIssuerReport {
  issuer: string;
  type: string;
  /** Accounts at the target carrying the issuer's prefix. */
  accounts: number;
  /** Accounts no issuing/active/revoking credential owns. */
  orphans: { name: string; removed: boolean; error?: string }[];
  /** Active credentials whose account is missing at the target. */
  ghosts: { credentialId: string; name: string; markedRevoked: boolean }[];
  /** Why the issuer could not be checked (no secret: error code or class only). */
  error?: string;
}

export interface DoctorDeps {
  db: Db;
  clock: Clock;
  kek: Secret<Buffer>;
  audit: Pick<AuditLog, 'append'>;
  issuers: Iterable<CredentialIssuer>;
  /** Counts the orphans found per issuer in `agent_sts.doctor.orphans` (0 too: the series shows the check ran). */
  telemetry?: Pick<Telemetry, 'instruments'>;
}

/** The account name in a database issuer's handle (`role` for postgres, `user` for mysql). */
function accountName(handle: RevocationHandle): string | undefined {
  const h = (handle ?? {}) as Record<string, unknown>;
  return typeof h.role === 'string' ? h.role : typeof h.user === 'string' ? h.user : undefined;
}

/** An error as a line without upstream text (which could echo a connection string): class and code. */
function safeError(e: unknown): string {
  const code = (e as { code?: unknown }).code;
  return `${(e as Error)?.name ?? 'Error'}${typeof code === 'string' || typeof code === 'number' ? ` (${code})` : ''}`;
}

/**
 * Compares agent-sts's credential rows with the accounts that exist at each target whose issuer can
 * list them (listManaged). Orphan: an account with the issuer's prefix that no issuing, active or
 * revoking credential owns (a leak). Ghost: an active credential whose account is gone.
 * With `fix`, orphans are removed through the issuer's own revoke() (sessions are ended too) and
 * ghosts marked revoked; both are audited.
 *
 * Ordering makes it safe beside a live broker: a credential row is always written before its
 * account is created, so accounts are listed before rows are read (a listed account's row is
 * visible), and listed again after for the ghost check (an account created meanwhile is not a ghost).
 */
export async function runDoctor(deps: DoctorDeps, opts: { fix: boolean; ctx: CallContext; onProgress?: (line: string) => void }): Promise<DoctorIssuerReport[]> {
  const reports: DoctorIssuerReport[] = [];
  for (const issuer of deps.issuers) {
    if (!issuer.listManaged) continue;
    opts.onProgress?.(`checking ${issuer.name} (${issuer.type}) ...`);
    const report: DoctorIssuerReport = { issuer: issuer.name, type: issuer.type, accounts: 0, orphans: [], ghosts: [] };
    reports.push(report);
    try {
      await checkIssuer(deps, issuer, report, opts);
      deps.telemetry?.instruments.doctorOrphans.add(report.orphans.length, toAttributes({ issuer: issuer.name, issuerType: issuer.type }));
    } catch (e) {
      report.error = safeError(e);
    }
  }
  return reports;
}

async function ownedNames(deps: DoctorDeps, issuerName: string): Promise<{ owned: Map<string, { id: string; state: string }> }> {
  const rows = await deps.db.credential.findMany({
    where: { issuerName, state: { in: OWNING_STATES }, sealedRevocationHandle: { not: null } },
    select: { id: true, state: true, sealedRevocationHandle: true },
  });
  const owned = new Map<string, { id: string; state: string }>();
  for (const r of rows) {
    const handle = JSON.parse(unseal(deps.kek.reveal(), r.sealedRevocationHandle!, handleAad(r.id))) as RevocationHandle;
    const name = accountName(handle);
    if (name) owned.set(name, { id: r.id, state: r.state });
  }
  return { owned };
}

async function checkIssuer(deps: DoctorDeps, issuer: CredentialIssuer, report: DoctorIssuerReport, opts: { fix: boolean; ctx: CallContext; onProgress?: (line: string) => void }) {
  const before = await issuer.listManaged!();
  report.accounts = before.length;
  const { owned } = await ownedNames(deps, issuer.name);
  for (const account of before) {
    if (owned.has(account.name)) continue;
    const orphan: DoctorIssuerReport['orphans'][number] = { name: account.name, removed: false };
    report.orphans.push(orphan);
    if (!opts.fix) continue;
    try {
      await issuer.revoke(account.handle, opts.ctx);
      orphan.removed = true;
    } catch (e) {
      orphan.error = safeError(e);
    }
    await deps.audit.append({
      event: {
        requestId: opts.ctx.requestId, action: 'doctor.orphan.remove', outcome: orphan.removed ? 'success' : 'failure', target: `credential-issuer:${issuer.name}`,
        reason: `account ${account.name} had no issuing, active or revoking credential${orphan.removed ? '; removed' : `; removal failed: ${orphan.error}`}`,
      },
    });
  }
  const after = new Set([...before, ...(await issuer.listManaged!())].map((a) => a.name));
  for (const [name, cred] of owned) {
    if (cred.state !== 'active' || after.has(name)) continue;
    const ghost = { credentialId: cred.id, name, markedRevoked: false };
    report.ghosts.push(ghost);
    if (!opts.fix) continue;
    const now = deps.clock.now();
    const claimed = await deps.db.credential.updateMany({ where: { id: cred.id, state: 'active' }, data: { state: 'revoking' } });
    if (claimed.count !== 1) continue;
    await deps.audit.append({
      event: { requestId: opts.ctx.requestId, action: 'doctor.ghost.revoke', outcome: 'success', credentialId: cred.id, reason: `account ${name} is missing at ${issuer.name}; credential marked revoked` },
      credentialUpdates: [{ id: cred.id, data: { state: 'revoked', revokedAt: now, lastError: 'account missing at the target (doctor)' } }],
    });
    ghost.markedRevoked = true;
  }
}
