-- AlterTable
ALTER TABLE "Task" ADD COLUMN "endClaimedUntil" DATETIME;
