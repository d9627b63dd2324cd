-- CreateTable
CREATE TABLE "PolicyApproval" (
    "id" TEXT NOT NULL PRIMARY KEY,
    "state" TEXT NOT NULL,
    "requestKey" TEXT NOT NULL,
    "workloadSubject" TEXT NOT NULL,
    "humanSubject" TEXT,
    "target" TEXT NOT NULL,
    "scopes" TEXT NOT NULL,
    "policyId" TEXT NOT NULL,
    "approvers" TEXT NOT NULL,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" DATETIME NOT NULL,
    "decidedBy" TEXT,
    "decidedAt" DATETIME,
    "reason" TEXT
);

-- CreateTable
CREATE TABLE "PolicyDocument" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "content" TEXT NOT NULL,
    "sha256" TEXT NOT NULL,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "updatedBy" TEXT NOT NULL DEFAULT 'unknown'
);

-- CreateIndex
CREATE INDEX "PolicyApproval_requestKey_state_idx" ON "PolicyApproval"("requestKey", "state");

-- CreateIndex
CREATE INDEX "PolicyApproval_state_expiresAt_idx" ON "PolicyApproval"("state", "expiresAt");

-- CreateIndex
CREATE INDEX "PolicyDocument_updatedAt_idx" ON "PolicyDocument"("updatedAt");
