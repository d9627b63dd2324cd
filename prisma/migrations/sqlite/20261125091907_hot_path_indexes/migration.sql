-- DropIndex
DROP INDEX "AuditEvent_outcome_time_idx";

-- DropIndex
DROP INDEX "Credential_fingerprint_idx";
