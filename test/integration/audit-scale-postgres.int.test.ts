// 100,000 audit records on PostgreSQL through the real write path (three Prisma batch writers on
// one database); see test/support/audit-scale.ts for what is checked.
import { createTestPostgresDatabase } from '../support/databases.js';
import { describeAuditAtScale } from '../support/audit-scale.js';

describeAuditAtScale('PostgreSQL', () => createTestPostgresDatabase('agsts_audit_scale'));
