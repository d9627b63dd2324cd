import type { AuditLog } from '../audit/audit-log.js';
import { sha256Hex } from '../lib/crypto.js';
import { auditedWrite, InstanceChangeRefused, type ChangeContext } from '../lib/instance-admin.js';
import { parsePolicyFile } from './policy-document.js';
import { apiSource, type PolicyDocumentTable, type PolicySet } from './policy-set.js';

/** Names of uploaded documents: the rule of `metadata.name`, at most 128 characters. */
const DOCUMENT_NAME = /^[A-Za-z0-9._:-]{1,128}$/;

/**
 * Policy documents through the admin API (and CLI). A change is validated against the whole live
 * set (config file, policy.dir, the other uploaded documents) before it is stored, audited with who
 * and the content's SHA-256 (never the content), stored, and in force on this replica at once and on
 * the others at their next poll. A refused change leaves the set as it was.
 *
 * PolicyCeiling documents are refused here: the ceiling is the organisation's bound on what any
 * policy may grant, so it lives with the rest of the trust root (config file / policy.dir, under
 * review in Git). Were it uploadable, the admin role could lift the bound its own uploads are
 * checked against.
 */
export function createPolicyAdmin(o: { set: PolicySet; table: PolicyDocumentTable; audit: Pick<AuditLog, 'append'> }) {
  const invalid = (problems: string[]) => new InstanceChangeRefused(400, 'invalid policy', problems.join('; '));

  function checkName(name: string): void {
    if (!DOCUMENT_NAME.test(name)) throw invalid([`name: letters, digits and . _ : - only, at most 128 (got ${JSON.stringify(name)})`]);
  }

  /** The content must be exactly one `kind: Policy` document named `name`. */
  function checkShape(name: string, content: string): void {
    const r = parsePolicyFile(apiSource(name), content);
    if (r.problems.length) throw invalid(r.problems);
    if (r.documents.length !== 1) throw invalid([`${apiSource(name)}: give exactly one policy document (got ${r.documents.length})`]);
    const { doc, where } = r.documents[0]!;
    if (doc.kind !== 'Policy')
      throw invalid([`${where(['kind'])}: a PolicyCeiling cannot be uploaded through the API; it belongs in the config file or policy.dir`]);
    if (doc.metadata.name !== name) throw invalid([`${where(['metadata', 'name'])}: metadata.name must be "${name}" (the name in the path)`]);
  }

  async function apply(ctx: ChangeContext, action: 'put' | 'delete', name: string, summary: string, write: () => Promise<unknown>) {
    const event = { requestId: ctx.requestId, action: `admin.policy.${action}`, clientAddress: ctx.clientAddress, policyId: name };
    try {
      await auditedWrite(o.audit, event, ctx.principal, summary, write);
    } catch (e) {
      const code = (e as { code?: string }).code;
      if (code === 'P2025') throw new InstanceChangeRefused(404, 'policy not found', `no uploaded policy document named "${name}"`);
      throw e;
    }
    return o.set.reload(true);
  }

  return {
    /** Creates or replaces an uploaded document. Throws InstanceChangeRefused (400) when refused. */
    async put(ctx: ChangeContext, name: string, content: string) {
      checkName(name);
      checkShape(name, content);
      const problems = await o.set.check(name, content);
      if (problems.length) throw invalid(problems);
      const sha256 = sha256Hex(content);
      const r = await apply(ctx, 'put', name, `; sha256 ${sha256}`, () =>
        o.table.upsert({ where: { name }, create: { name, content, sha256, updatedBy: ctx.principal }, update: { content, sha256, updatedBy: ctx.principal } }),
      );
      return { name, sha256, version: r.version };
    },

    /** Removes an uploaded document (404 when there is none; 400 when the rest would not compile). */
    async remove(ctx: ChangeContext, name: string) {
      checkName(name);
      const rows = await o.table.findMany({ orderBy: { name: 'asc' } });
      if (!rows.some((r) => r.name === name)) throw new InstanceChangeRefused(404, 'policy not found', `no uploaded policy document named "${name}"`);
      const problems = await o.set.check(name, null);
      if (problems.length) throw invalid(problems);
      const r = await apply(ctx, 'delete', name, '', () => o.table.delete({ where: { name } }));
      return { deleted: name, version: r.version };
    },
  };
}
export type PolicyAdmin = ReturnType<typeof createPolicyAdmin>;
