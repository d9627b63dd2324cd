-- CreateTable
CREATE TABLE "SigningKey" (
    "kid" TEXT NOT NULL,
    "alg" TEXT NOT NULL,
    "publicJwk" TEXT NOT NULL,
    "sealedPrivateKey" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "activatesAt" TIMESTAMP(3) NOT NULL,
    "retiredAt" TIMESTAMP(3),
    "publishUntil" TIMESTAMP(3),

    CONSTRAINT "SigningKey_pkey" PRIMARY KEY ("kid")
);

-- CreateTable
CREATE TABLE "TrustProvider" (
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "config" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "TrustProvider_pkey" PRIMARY KEY ("name")
);

-- CreateTable
CREATE TABLE "Task" (
    "id" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "providerName" TEXT NOT NULL,
    "workloadSubject" TEXT NOT NULL,
    "humanSubject" TEXT,
    "parentTaskId" TEXT,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "deadline" TIMESTAMP(3) NOT NULL,
    "endedAt" TIMESTAMP(3),
    "endReason" TEXT,

    CONSTRAINT "Task_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "Credential" (
    "id" TEXT NOT NULL,
    "taskId" TEXT NOT NULL,
    "issuerName" TEXT NOT NULL,
    "issuerType" TEXT NOT NULL,
    "tokenType" TEXT NOT NULL,
    "target" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "fingerprint" TEXT NOT NULL,
    "issuedAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "sealedRevocationHandle" TEXT,
    "revokedAt" TIMESTAMP(3),
    "revokeAttempts" INTEGER NOT NULL DEFAULT 0,
    "lastError" TEXT,

    CONSTRAINT "Credential_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "AuditEvent" (
    "id" TEXT NOT NULL,
    "chainId" TEXT NOT NULL,
    "seq" INTEGER NOT NULL,
    "time" TIMESTAMP(3) NOT NULL,
    "requestId" TEXT NOT NULL,
    "action" TEXT NOT NULL,
    "outcome" TEXT NOT NULL,
    "reason" TEXT,
    "providerName" TEXT,
    "workloadSubject" TEXT,
    "humanSubject" TEXT,
    "delegationChain" TEXT,
    "target" TEXT,
    "requestedScope" TEXT,
    "grantedScope" TEXT,
    "policyId" TEXT,
    "policyVersion" TEXT,
    "taskId" TEXT,
    "credentialId" TEXT,
    "credentialFingerprint" TEXT,
    "credentialExpiresAt" TIMESTAMP(3),
    "clientAddress" TEXT,
    "prevHash" TEXT NOT NULL,
    "hash" TEXT NOT NULL,

    CONSTRAINT "AuditEvent_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "AuditChainHead" (
    "chainId" TEXT NOT NULL,
    "seq" INTEGER NOT NULL,
    "hash" TEXT NOT NULL,
    "updatedAt" TIMESTAMP(3) NOT NULL,

    CONSTRAINT "AuditChainHead_pkey" PRIMARY KEY ("chainId")
);

-- CreateIndex
CREATE INDEX "Task_state_deadline_idx" ON "Task"("state", "deadline");

-- CreateIndex
CREATE INDEX "Task_workloadSubject_idx" ON "Task"("workloadSubject");

-- CreateIndex
CREATE INDEX "Credential_taskId_idx" ON "Credential"("taskId");

-- CreateIndex
CREATE INDEX "Credential_state_expiresAt_idx" ON "Credential"("state", "expiresAt");

-- CreateIndex
CREATE INDEX "Credential_fingerprint_idx" ON "Credential"("fingerprint");

-- CreateIndex
CREATE INDEX "AuditEvent_time_idx" ON "AuditEvent"("time");

-- CreateIndex
CREATE INDEX "AuditEvent_workloadSubject_time_idx" ON "AuditEvent"("workloadSubject", "time");

-- CreateIndex
CREATE INDEX "AuditEvent_humanSubject_time_idx" ON "AuditEvent"("humanSubject", "time");

-- CreateIndex
CREATE INDEX "AuditEvent_target_time_idx" ON "AuditEvent"("target", "time");

-- CreateIndex
CREATE INDEX "AuditEvent_outcome_time_idx" ON "AuditEvent"("outcome", "time");

-- CreateIndex
CREATE INDEX "AuditEvent_credentialFingerprint_idx" ON "AuditEvent"("credentialFingerprint");

-- CreateIndex
CREATE UNIQUE INDEX "AuditEvent_chainId_seq_key" ON "AuditEvent"("chainId", "seq");

-- AddForeignKey
ALTER TABLE "Credential" ADD CONSTRAINT "Credential_taskId_fkey" FOREIGN KEY ("taskId") REFERENCES "Task"("id") ON DELETE RESTRICT ON UPDATE CASCADE;
