-- AlterTable
ALTER TABLE "TrustProvider" ADD COLUMN     "enabled" BOOLEAN NOT NULL DEFAULT true,
ADD COLUMN     "updatedBy" TEXT NOT NULL DEFAULT 'unknown';

-- CreateTable
CREATE TABLE "AttestationUse" (
    "provider" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "createdAt" TIMESTAMP(3) NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" TIMESTAMP(3),

    CONSTRAINT "AttestationUse_pkey" PRIMARY KEY ("provider","key")
);

-- CreateIndex
CREATE INDEX "AttestationUse_expiresAt_idx" ON "AttestationUse"("expiresAt");

-- CreateIndex
CREATE INDEX "TrustProvider_updatedAt_idx" ON "TrustProvider"("updatedAt");
