-- CreateTable
CREATE TABLE "CredentialIssuerInstance" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "type" TEXT NOT NULL,
    "config" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "updatedBy" TEXT NOT NULL DEFAULT 'unknown'
);

-- CreateIndex
CREATE INDEX "CredentialIssuerInstance_updatedAt_idx" ON "CredentialIssuerInstance"("updatedAt");
