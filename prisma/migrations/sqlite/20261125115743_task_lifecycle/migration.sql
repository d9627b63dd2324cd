-- AlterTable
ALTER TABLE "Credential" ADD COLUMN "nextRevokeAt" DATETIME;

-- AlterTable
ALTER TABLE "Task" ADD COLUMN "idleTimeoutSeconds" INTEGER;
ALTER TABLE "Task" ADD COLUMN "lastActivityAt" DATETIME;
ALTER TABLE "Task" ADD COLUMN "purpose" TEXT;

-- CreateTable
CREATE TABLE "IdentityBlock" (
    "subject" TEXT NOT NULL PRIMARY KEY,
    "kind" TEXT NOT NULL,
    "reason" TEXT NOT NULL,
    "blockedBy" TEXT NOT NULL,
    "createdAt" DATETIME NOT NULL DEFAULT CURRENT_TIMESTAMP
);

-- CreateTable
CREATE TABLE "Lease" (
    "name" TEXT NOT NULL PRIMARY KEY,
    "holder" TEXT NOT NULL,
    "expiresAt" DATETIME NOT NULL
);
