-- CreateTable
CREATE TABLE "PolicyApproval" (
    "id" TEXT NOT NULL,
    "state" TEXT NOT NULL,
    "requestKey" TEXT NOT NULL,
    "workloadSubject" TEXT NOT NULL,
    "humanSubject" TEXT,
    "target" TEXT NOT NULL,
    "scopes" TEXT NOT NULL,
    "policyId" TEXT NOT NULL,
    "approvers" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" TIMESTAMP(3) NOT NULL,
    "decidedBy" TEXT,
    "decidedAt" TIMESTAMP(3),
    "reason" TEXT,

    CONSTRAINT "PolicyApproval_pkey" PRIMARY KEY ("id")
);

-- CreateTable
CREATE TABLE "PolicyDocument" (
    "name" TEXT NOT NULL,
    "content" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    "updatedBy" TEXT NOT NULL DEFAULT 'unknown',

    CONSTRAINT "PolicyDocument_pkey" PRIMARY KEY ("name")
);

-- CreateIndex
CREATE INDEX "PolicyApproval_requestKey_state_idx" ON "PolicyApproval"("requestKey", "state");

-- CreateIndex
CREATE INDEX "PolicyApproval_state_expiresAt_idx" ON "PolicyApproval"("state", "expiresAt");

-- CreateIndex
CREATE INDEX "PolicyDocument_updatedAt_idx" ON "PolicyDocument"("updatedAt");
