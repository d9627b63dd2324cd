-- AlterTable
ALTER TABLE "AuditEvent" ADD COLUMN     "flags" TEXT,
ADD COLUMN     "issuerName" TEXT;

-- CreateTable
CREATE TABLE "AuditCheckpoint" (
    "id" TEXT NOT NULL,
    "chainId" TEXT NOT NULL,
    "seq" INTEGER NOT NULL,
    "hash" TEXT NOT NULL,
    "time" TIMESTAMP(3) NOT NULL,
    "kind" TEXT NOT NULL,
    "jws" TEXT NOT NULL,
    "prunedThrough" INTEGER,

    CONSTRAINT "AuditCheckpoint_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Identity" (
    "subject" TEXT NOT NULL,
    "kind" TEXT NOT NULL,
    "providerName" TEXT NOT NULL,
    "firstSeenAt" TIMESTAMP(3) NOT NULL,
    "lastSeenAt" TIMESTAMP(3) NOT NULL,
    "owner" TEXT,
    "attributes" TEXT NOT NULL DEFAULT '{}',
    "networks" TEXT NOT NULL DEFAULT '[]',
    "disabledAt" TIMESTAMP(3),
    "disabledReason" TEXT,

    CONSTRAINT "Identity_pkey" PRIMARY KEY ("kind","subject")
);

-- CreateTable
CREATE TABLE "IdentityTargetUse" (
    "subject" TEXT NOT NULL,
    "target" TEXT NOT NULL,
    "firstUsedAt" TIMESTAMP(3) NOT NULL,
    "lastUsedAt" TIMESTAMP(3) NOT NULL,
    "uses" INTEGER NOT NULL DEFAULT 0,
    "scopes" TEXT NOT NULL DEFAULT '[]',

    CONSTRAINT "IdentityTargetUse_pkey" PRIMARY KEY ("subject","target")
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
