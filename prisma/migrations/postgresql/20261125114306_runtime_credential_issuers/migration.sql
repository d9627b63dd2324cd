-- CreateTable
CREATE TABLE "CredentialIssuerInstance" (
    "name" TEXT NOT NULL,
    "type" TEXT NOT NULL,
    "config" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" TIMESTAMP(3) NOT NULL,
    "updatedBy" TEXT NOT NULL DEFAULT 'unknown',

    CONSTRAINT "CredentialIssuerInstance_pkey" PRIMARY KEY ("name")
);

-- CreateIndex
CREATE INDEX "CredentialIssuerInstance_updatedAt_idx" ON "CredentialIssuerInstance"("updatedAt");
