-- AlterTable
ALTER TABLE "Task" ADD COLUMN     "rootTaskId" TEXT;

-- CreateIndex
CREATE INDEX "Task_rootTaskId_idx" ON "Task"("rootTaskId");
