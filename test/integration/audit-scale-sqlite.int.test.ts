// 100,000 audit records on SQLite through the real write path (three writer threads on one file);
// see test/support/audit-scale.ts for what is checked.
import { createTestSqliteUrl } from '../support/databases.js';
import { describeAuditAtScale } from '../support/audit-scale.js';

describeAuditAtScale('SQLite', async () => createTestSqliteUrl('agsts-audit-scale'));
