-- AlterTable
ALTER TABLE "Task" ADD COLUMN "instance" TEXT;

-- CreateIndex
CREATE INDEX "Task_instance_idx" ON "Task"("instance");
