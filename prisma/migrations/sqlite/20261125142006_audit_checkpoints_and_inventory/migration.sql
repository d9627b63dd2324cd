-- AlterTable
ALTER TABLE "AuditEvent" ADD COLUMN "flags" TEXT;
ALTER TABLE "AuditEvent" ADD COLUMN "issuerName" TEXT;

-- CreateTable
CREATE TABLE "AuditCheckpoint" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "chainId" TEXT NOT NULL,
    "seq" INTEGER NOT NULL,
    "hash" TEXT NOT NULL,
    "time" DATETIME NOT NULL,
    "kind" TEXT NOT NULL,
    "jws" TEXT NOT NULL,
    "prunedThrough" INTEGER
);

-- CreateTable
CREATE TABLE "Identity" (
    "subject" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "providerName" TEXT NOT NULL,
    "firstSeenAt" DATETIME NOT NULL,
    "lastSeenAt" DATETIME NOT NULL,
    "owner" TEXT,
    "attributes" TEXT NOT NULL DEFAULT '{}',
    "networks" TEXT NOT NULL DEFAULT '[]',
    "disabledAt" DATETIME,
    "disabledReason" TEXT,

    PRIMARY KEY ("kind", "subject")
);

-- CreateTable
CREATE TABLE "IdentityTargetUse" (
    "subject" TEXT NOT NULL,
    "target" TEXT NOT NULL,
    "firstUsedAt" DATETIME NOT NULL,
    "lastUsedAt" DATETIME NOT NULL,
    "uses" INTEGER NOT NULL DEFAULT 0,
    "scopes" TEXT NOT NULL DEFAULT '[]',

    PRIMARY KEY ("subject", "target")
);

-- CreateIndex
CREATE INDEX "AuditCheckpoint_time_idx" ON "AuditCheckpoint"("time");

-- CreateIndex
CREATE UNIQUE INDEX "AuditCheckpoint_chainId_seq_kind_key" ON "AuditCheckpoint"("chainId", "seq", "kind");

-- CreateIndex
CREATE INDEX "Identity_lastSeenAt_idx" ON "Identity"("lastSeenAt");

-- CreateIndex
CREATE INDEX "IdentityTargetUse_target_idx" ON "IdentityTargetUse"("target");

-- CreateIndex
CREATE INDEX "AuditEvent_taskId_idx" ON "AuditEvent"("taskId");

-- CreateIndex
CREATE INDEX "AuditEvent_issuerName_time_idx" ON "AuditEvent"("issuerName", "time");
