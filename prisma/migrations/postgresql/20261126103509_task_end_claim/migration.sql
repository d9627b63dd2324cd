-- AlterTable
ALTER TABLE "Task" ADD COLUMN     "endClaimedUntil" TIMESTAMP(3);
