import type { BlendedIdentity, Decision } from '../core/types.js';
import { PolicyDenied, ScopeNotAllowed } from '../errors/sts-errors.js';
import type { GrantRequirements } from './credential-issuer.js';

/**
 * Helpers for the policy's scope parameters and session-tag obligations, shared by the issuers.
 * A parameter narrows its scope within what the issuer's configuration allows for it; no
 * parameter means the scope's full extent. Each issuer's checkGrant() says which parameters it
 * takes; the same function runs at load (with file and line) and again at issue (fail closed).
 */

/** Items of a list-valued parameter: comma-separated, trimmed, empty items dropped. */
export const paramItems = (v: string): string[] => v.split(',').map((x) => x.trim()).filter(Boolean);

/** The parameters the decision gives `scope` (an empty object when none). */
export function paramsOf(decision: Pick<Decision, 'scopeParams'>, scope: string): Readonly<Record<string, string>> {
  const all = decision.scopeParams;
  return all && Object.hasOwn(all, scope) ? all[scope]! : {};
}

/** Parameters of `params` outside `known`, as a problem sentence (or undefined). */
export function unknownParams(scope: string, params: Readonly<Record<string, string>>, known: readonly string[], hint: string): string | undefined {
  const unknown = Object.keys(params).filter((k) => !known.includes(k));
  return unknown.length ? `scope ${scope}: unknown parameter${unknown.length > 1 ? 's' : ''} ${unknown.join(', ')} (${hint})` : undefined;
}

/** The decision's grant in the shape checkGrant() takes: everything the issuance will use is in it. */
export function grantOfDecision(decision: Decision): GrantRequirements {
  return {
    scopes: new Map(decision.grantedScopes.map((s) => [s, paramsOf(decision, s)])),
    ...(decision.obligations?.sessionTags ? { sessionTags: decision.obligations.sessionTags } : {}),
    standalone: true,
  };
}

/**
 * Refuses an issuance whose grant breaks the issuer's rules (its checkGrant problems). Normally
 * caught when the policy set loads; this is the fail-closed guard for sets loaded without the
 * issuer's configuration at hand (an issuer registered at runtime). The problems go to the audit
 * record only.
 */
export function refuseGrantProblems(issuer: string, problems: readonly string[]): void {
  if (problems.length)
    throw new ScopeNotAllowed('the granted scope parameters or obligations cannot be honoured by this target', { detail: { issuer, reasons: [...problems] } });
}

/**
 * Session-tag values may be literal text or reference the identity: `${task_id}`,
 * `${workload.subject}`, `${workload.provider}`, `${workload.attributes.<name>}`,
 * `${human.subject}`, `${human.email}`, `${human.issuer}`. Values are substituted as text, never
 * evaluated; a referenced value the identity lacks refuses the issuance.
 */
export const SESSION_TAG_PLACEHOLDERS = ['task_id', 'workload.subject', 'workload.provider', 'workload.attributes.<name>', 'human.subject', 'human.email', 'human.issuer'] as const;
const TAG_PLACEHOLDER = /\$\{([^}]*)\}/g;
const ATTRIBUTE_PLACEHOLDER = /^workload\.attributes\.([A-Za-z0-9_.:-]+)$/;

function isKnownTagPlaceholder(name: string): boolean {
  return ATTRIBUTE_PLACEHOLDER.test(name) || (SESSION_TAG_PLACEHOLDERS as readonly string[]).includes(name);
}

/** Problems of one session-tag template (unknown placeholders), for checkGrant. */
export function sessionTagTemplateProblems(key: string, template: string): string[] {
  const problems: string[] = [];
  for (const [, name] of template.matchAll(TAG_PLACEHOLDER))
    if (!isKnownTagPlaceholder(name!)) problems.push(`session tag ${key}: unknown placeholder \${${name}} (known: ${SESSION_TAG_PLACEHOLDERS.map((n) => `\${${n}}`).join(', ')})`);
  return problems;
}

/** The template's literal text (placeholders removed), to check against a target's charset. */
export const sessionTagLiteral = (template: string): string => template.replace(TAG_PLACEHOLDER, '');

/** Renders the session tags of a decision for this identity and task; throws PolicyDenied when a referenced value is missing. */
export function renderSessionTags(tags: Readonly<Record<string, string>>, identity: BlendedIdentity, taskId: string): Record<string, string> {
  const out = new Map<string, string>();
  for (const [key, template] of Object.entries(tags)) {
    out.set(key, template.replace(TAG_PLACEHOLDER, (_m, name: string) => {
      const v = placeholderValue(name, identity, taskId);
      if (v === undefined || v === '')
        throw new PolicyDenied('not permitted by policy: an obligation of this grant cannot be met for this identity', {
          detail: { reasons: [`session tag ${key} needs \${${name}}, which this identity does not have`] },
        });
      return v;
    }));
  }
  return Object.fromEntries(out);
}

function placeholderValue(name: string, id: BlendedIdentity, taskId: string): string | undefined {
  const attribute = ATTRIBUTE_PLACEHOLDER.exec(name);
  if (attribute) return Object.hasOwn(id.workload.attributes, attribute[1]!) ? id.workload.attributes[attribute[1]!] : undefined;
  switch (name) {
    case 'task_id':
      return taskId;
    case 'workload.subject':
      return id.workload.subject;
    case 'workload.provider':
      return id.workload.provider;
    case 'human.subject':
      return id.human?.subject;
    case 'human.email':
      return id.human?.email;
    case 'human.issuer':
      return id.human?.issuer;
    default:
      return undefined; // unknown: refused at load; refused here too
  }
}
