/**
 * The hot write path of the broker: one transaction per group commit holding new tasks, new
 * credentials, state changes and the audit records that describe them, plus the chain head.
 * Two implementations behind this interface: PostgreSQL through Prisma's parameterised raw
 * queries (async, the database does the work), and SQLite through a writer thread that owns its
 * own connection, so the synchronous driver's fsync never blocks the event loop.
 */
export interface BatchWriter {
  /** Writes everything in one transaction; resolves once it is durable, rejects if nothing was written. */
  commit(batch: Batch): Promise<void>;
  /**
   * How many batches may be in flight at once. Above 1 the writer must apply them in order and
   * refuse a batch whose epoch is that of an earlier batch that failed (it chains on rows that
   * were rolled back).
   */
  readonly maxInFlight: number;
  /**
   * Single-use claims (the replay table), committed durably off the event loop with whatever else
   * is committing: true if this call took `key` (new, or its earlier claim had expired), false if
   * a live claim holds it. Absent: the caller writes the claim itself (PostgreSQL, through Prisma).
   */
  claimOnce?(claim: Claim): Promise<boolean>;
  close(): Promise<void>;
}

export interface Claim {
  provider: string;
  key: string;
  /** Now: also the instant against which an earlier claim counts as expired. */
  createdAt: Date;
  /** Null: held for good. */
  expiresAt: Date | null;
}

/**
 * Takes a claim in one statement: a new row, or the row of an expired claim taken over. One row
 * changed means it is ours; none, that a live claim holds the key. Identifiers are constants.
 */
export const CLAIM_SQL =
  'INSERT INTO "AttestationUse" ("provider", "key", "createdAt", "expiresAt") VALUES (?, ?, ?, ?) ' +
  'ON CONFLICT ("provider", "key") DO UPDATE SET "createdAt" = excluded."createdAt", "expiresAt" = excluded."expiresAt" ' +
  'WHERE "AttestationUse"."expiresAt" IS NOT NULL AND "AttestationUse"."expiresAt" <= excluded."createdAt"';

export interface TaskInsert {
  id: string;
  state: string;
  providerName: string;
  workloadSubject: string;
  humanSubject?: string | null;
  parentTaskId?: string | null;
  rootTaskId?: string | null;
  deadline: Date;
  purpose?: string | null;
  idleTimeoutSeconds?: number | null;
  lastActivityAt?: Date | null;
  instance?: string | null;
}

export interface CredentialInsert {
  id: string;
  taskId: string;
  issuerName: string;
  issuerType: string;
  tokenType: string;
  target: string;
  state: string;
  fingerprint: string;
  expiresAt: Date;
  sealedRevocationHandle?: string | null;
}

export interface CredentialUpdate {
  id: string;
  /** Compare-and-set: the row must be in this state, or nothing of the batch is written. */
  from?: string;
  data: { state?: string; fingerprint?: string; expiresAt?: Date; sealedRevocationHandle?: string | null; revokedAt?: Date | null; lastError?: string | null };
}

export interface TaskUpdate {
  id: string;
  /** Compare-and-set: the row must be in this state, or nothing of the batch is written. */
  from?: string;
  data: { state?: string; endedAt?: Date; endReason?: string; lastActivityAt?: Date; endClaimedUntil?: Date | null };
}

export type Value = string | number | Date | null;
export type Row = Record<string, Value | undefined>;

export interface Batch {
  /** Chain epoch (see BatchWriter.maxInFlight). */
  epoch: number;
  /** Commit time: `createdAt` of new tasks, `issuedAt` of new credentials, the head's `updatedAt`. */
  time: Date;
  tasks: TaskInsert[];
  credentials: CredentialInsert[];
  credentialUpdates: CredentialUpdate[];
  taskUpdates: TaskUpdate[];
  /** Audit rows, already hashed and chained (columns: AUDIT_COLUMNS). */
  auditRows: Row[];
  head: { chainId: string; seq: number; hash: string };
}

// Identifiers in the SQL below come only from these constant lists, never from input.
export const TASK_COLUMNS = ['id', 'state', 'providerName', 'workloadSubject', 'humanSubject', 'parentTaskId', 'rootTaskId', 'createdAt', 'deadline', 'purpose', 'idleTimeoutSeconds', 'lastActivityAt', 'instance'] as const;
export const CREDENTIAL_COLUMNS = [
  'id', 'taskId', 'issuerName', 'issuerType', 'tokenType', 'target', 'state', 'fingerprint', 'issuedAt', 'expiresAt', 'sealedRevocationHandle', 'revokeAttempts',
] as const;
export const AUDIT_COLUMNS = [
  'id', 'chainId', 'seq', 'time', 'requestId', 'action', 'outcome', 'reason', 'providerName', 'workloadSubject', 'humanSubject',
  'delegationChain', 'target', 'requestedScope', 'grantedScope', 'policyId', 'policyVersion', 'taskId', 'credentialId',
  'credentialFingerprint', 'credentialExpiresAt', 'clientAddress', 'prevHash', 'hash', 'issuerName', 'flags',
] as const;
export const HEAD_COLUMNS = ['chainId', 'seq', 'hash', 'updatedAt'] as const;
export const CREDENTIAL_UPDATABLE = ['state', 'fingerprint', 'expiresAt', 'sealedRevocationHandle', 'revokedAt', 'lastError'] as const;
export const TASK_UPDATABLE = ['state', 'endedAt', 'endReason', 'lastActivityAt', 'endClaimedUntil'] as const;
export const HEAD_UPSERT = ' ON CONFLICT ("chainId") DO UPDATE SET "seq" = excluded."seq", "hash" = excluded."hash", "updatedAt" = excluded."updatedAt"';

export type Table = 'Task' | 'Credential' | 'AuditEvent' | 'AuditChainHead';

/** Rows of a batch per table, with the commit-time defaults filled in. */
export function batchRows(b: Batch): { table: Table; columns: readonly string[]; rows: Row[]; suffix?: string }[] {
  return [
    { table: 'Task', columns: TASK_COLUMNS, rows: b.tasks.map((t) => ({ ...t, createdAt: b.time })) },
    { table: 'Credential', columns: CREDENTIAL_COLUMNS, rows: b.credentials.map((c) => ({ ...c, issuedAt: b.time, revokeAttempts: 0 })) },
    { table: 'AuditEvent', columns: AUDIT_COLUMNS, rows: b.auditRows },
    { table: 'AuditChainHead', columns: HEAD_COLUMNS, rows: [{ ...b.head, updatedAt: b.time }], suffix: HEAD_UPSERT },
  ];
}

/** Updates of a batch, checked against the updatable columns (a typo must not become SQL). */
export function batchUpdates(b: Batch): BatchUpdate[] {
  const pick = (table: Table, allowed: readonly string[], u: CredentialUpdate | TaskUpdate): BatchUpdate => {
    const set = Object.entries(u.data).filter(([, v]) => v !== undefined) as [string, Value][];
    for (const [k] of set) if (!allowed.includes(k)) throw new Error(`${table}.${k} cannot be updated by a batch`);
    return { table, id: u.id, set, ...(u.from !== undefined ? { from: u.from } : {}) };
  };
  return [
    ...b.credentialUpdates.map((u) => pick('Credential', CREDENTIAL_UPDATABLE, u)),
    ...b.taskUpdates.map((u) => pick('Task', TASK_UPDATABLE, u)),
  ].filter((u) => u.set.length > 0);
}

/** One row update of a batch: `UPDATE table SET set WHERE id = id [AND state = from]`, exactly one row. */
export interface BatchUpdate {
  table: Table;
  id: string;
  set: [string, Value][];
  /** The state the row must be in (compare-and-set). */
  from?: string;
}


/** Why an update found no row: the row is missing, or (compare-and-set) no longer in the state it expected. */
export const missingRow = (u: Pick<BatchUpdate, 'table' | 'id' | 'from'>) =>
  u.from === undefined ? `${u.table} ${u.id} does not exist; nothing of this batch was written` : `${u.table} ${u.id} does not exist or is no longer ${u.from}; nothing of this batch was written`;
