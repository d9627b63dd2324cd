-- CreateTable
CREATE TABLE "AttestationUse" (
    "provider" TEXT NOT NULL,
    "key" TEXT NOT NULL,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "expiresAt" DATETIME,

    PRIMARY KEY ("provider", "key")
);

-- RedefineTables
PRAGMA defer_foreign_keys=ON;
PRAGMA foreign_keys=OFF;
CREATE TABLE "new_TrustProvider" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "type" TEXT NOT NULL,
    "config" TEXT NOT NULL,
    "enabled" BOOLEAN NOT NULL DEFAULT true,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP,
    "updatedAt" DATETIME NOT NULL,
    "updatedBy" TEXT NOT NULL DEFAULT 'unknown'
);
INSERT INTO "new_TrustProvider" ("config", "createdAt", "name", "type", "updatedAt") SELECT "config", "createdAt", "name", "type", "updatedAt" FROM "TrustProvider";
DROP TABLE "TrustProvider";
ALTER TABLE "new_TrustProvider" RENAME TO "TrustProvider";
CREATE INDEX "TrustProvider_updatedAt_idx" ON "TrustProvider"("updatedAt");
PRAGMA foreign_keys=ON;
PRAGMA defer_foreign_keys=OFF;

-- CreateIndex
CREATE INDEX "AttestationUse_expiresAt_idx" ON "AttestationUse"("expiresAt");
