-- CreateIndex
CREATE INDEX "Credential_revokedAt_idx" ON "Credential"("revokedAt");

-- CreateIndex
CREATE INDEX "Task_endedAt_idx" ON "Task"("endedAt");
