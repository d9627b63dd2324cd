import type { Tag } from '@aws-sdk/client-sts';
import type { BlendedIdentity } from '../../core/types.js';
import { sha256Hex } from '../../lib/crypto.js';
import { paramItems, renderSessionTags, sessionTagLiteral, sessionTagTemplateProblems, unknownParams } from '../grant-params.js';

/**
 * What an AssumeRole request carries besides the role: the session policy (a role's template, or
 * one built from the grant's `actions` / `resources` parameters) and the session tags (agent-sts's
 * own plus the grant's sessionTags obligation). Session policies can only narrow the role (AWS
 * intersects them with the role's permissions), so no parameter can widen what the role allows.
 */

export const AWS_MAX_SESSION_POLICY_CHARS = 2048;
const TAG_KEY_MAX = 128;
const TAG_VALUE_MAX = 256;
/** STS allows 50 session tags per AssumeRole; agent-sts's own take up to 3. */
const MAX_SESSION_TAGS = 50;
const OWN_TAG_KEYS = ['agent-sts:task', 'agent-sts:subject', 'agent-sts:human'];

/** Placeholders a session-policy template may use besides `${param.<name>}`; anything else of this shape (no `:`) is a typo. */
export const SESSION_POLICY_PLACEHOLDERS = ['task_id', 'workload', 'human', 'source_identity'] as const;
/** `${param.<name>}`: the value of the granted scope's parameter <name>. */
const PARAM = 'param.';
/** `${name}` or `${param.name}`, without a colon: ours. IAM's own policy variables (`${aws:username}`, `${aws:PrincipalTag/x}`) have one and are left alone. */
const PLACEHOLDER = /\$\{([A-Za-z0-9_]+(?:\.[A-Za-z0-9_]+)?)\}/g;
/** A parameter value substituted into a template: no wildcards, list separators or `$`, so it cannot widen the template's pattern or become an IAM variable. */
const TEMPLATE_VALUE = /^[A-Za-z0-9_.:/=+@-]{1,256}$/;

/** Parameters a grant may give a role without a template; they build the session policy. */
export const POLICY_PARAMS = ['actions', 'resources'] as const;
const ACTION = /^(\*|[a-z0-9-]+:[A-Za-z0-9*?]+)$/;
const RESOURCE = /^(\*|arn:[\x21-\x7e]{1,2000})$/;
/** AWS's tag charset `[\p{L}\p{Z}\p{N}_.:/=+\-@]`. */
const TAG_CHARS = /^[\p{L}\p{Z}\p{N}_.:/=+\-@]*$/u;

export const sanitizeTag = (s: string) => s.replace(/[^\p{L}\p{Z}\p{N}_.:/=+\-@]/gu, '_');

/** Fits `s` into `max` characters; a cut string ends with a hash of the original so distinct inputs stay distinct. */
export function fit(s: string, original: string, max: number): string {
  if (s.length <= max) return s;
  const h = sha256Hex(original).slice(0, 10);
  return `${s.slice(0, max - h.length - 1)}.${h}`;
}

/** Strings of every JSON value (and key) of a template, to check its placeholders. */
function templateStrings(v: unknown): string[] {
  if (typeof v === 'string') return [v];
  if (Array.isArray(v)) return v.flatMap(templateStrings);
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => [k, ...templateStrings(x)]);
  return [];
}

const placeholdersOf = (template: unknown): string[] => templateStrings(template).flatMap((s) => [...s.matchAll(PLACEHOLDER)].map((m) => m[1]!));

/** Problems of a configured template (for the config schema): unknown placeholders, size without them. */
export function sessionPolicyTemplateProblems(template: Record<string, unknown>): string[] {
  const problems: string[] = [];
  for (const name of placeholdersOf(template))
    if (!name.startsWith(PARAM) && !(SESSION_POLICY_PLACEHOLDERS as readonly string[]).includes(name))
      problems.push(`unknown placeholder \${${name}} (known: ${SESSION_POLICY_PLACEHOLDERS.map((n) => `\${${n}}`).join(', ')}, \${param.<name>}; IAM variables like \${aws:username} pass through)`);
  const bare = JSON.stringify(template).replace(PLACEHOLDER, '');
  if (bare.length > AWS_MAX_SESSION_POLICY_CHARS) problems.push(`the session policy is ${bare.length} characters without its placeholders; AWS allows ${AWS_MAX_SESSION_POLICY_CHARS}`);
  return problems;
}

/** The `${param.<name>}` names a template uses. */
export const templateParams = (template: unknown): Set<string> => new Set(placeholdersOf(template).filter((n) => n.startsWith(PARAM)).map((n) => n.slice(PARAM.length)));

/** Substitutes placeholders inside the parsed JSON strings, so a value can never break out of its string. */
function renderTemplate(template: unknown, values: Readonly<Record<string, string>>): unknown {
  if (typeof template === 'string') return template.replace(PLACEHOLDER, (m, name: string) => (Object.hasOwn(values, name) ? values[name]! : m));
  if (Array.isArray(template)) return template.map((v) => renderTemplate(v, values));
  if (template && typeof template === 'object')
    return Object.fromEntries(Object.entries(template).map(([k, v]) => [renderTemplate(k, values) as string, renderTemplate(v, values)]));
  return template;
}

/** The policy `actions` / `resources` parameters stand for (undefined without either). */
function policyFromParams(params: Readonly<Record<string, string>>): Record<string, unknown> | undefined {
  const actions = params.actions !== undefined ? paramItems(params.actions) : undefined;
  const resources = params.resources !== undefined ? paramItems(params.resources) : undefined;
  if (!actions && !resources) return undefined;
  return { Version: '2012-10-17', Statement: [{ Effect: 'Allow', Action: actions ?? '*', Resource: resources ?? '*' }] };
}

/**
 * Problems of one granted scope's parameters for its role. With a template: every parameter must
 * be one the template uses (`${param.<name>}`), with a value that is one plain token; a grant
 * that decides alone must give every parameter the template uses. Without one: only `actions`
 * (IAM actions) and `resources` (ARNs), comma-separated, which build the session policy.
 */
export function roleParamProblems(scope: string, sessionPolicy: Record<string, unknown> | undefined, params: Readonly<Record<string, string>>, standalone: boolean): string[] {
  const problems: string[] = [];
  if (sessionPolicy) {
    const used = templateParams(sessionPolicy);
    for (const [k, v] of Object.entries(params)) {
      if (!used.has(k)) problems.push(`scope ${scope}: parameter ${k} is not used by the role's session-policy template (it would narrow nothing; the template uses ${[...used].map((u) => `\${param.${u}}`).join(', ') || 'no parameters'})`);
      else if (!TEMPLATE_VALUE.test(v)) problems.push(`scope ${scope}: parameter ${k} must be one value of [A-Za-z0-9_.:/=+@-] (no wildcards or lists: it is substituted into the role's session-policy template)`);
    }
    if (standalone) for (const u of used) if (!Object.hasOwn(params, u)) problems.push(`scope ${scope}: the role's session-policy template needs parameter ${u}; give it in the grant ({ name: ${scope}, params: { ${u}: ... } })`);
    return problems;
  }
  const unknown = unknownParams(scope, params, POLICY_PARAMS, 'a role without a sessionPolicy template takes actions and resources, which build the session policy');
  if (unknown) problems.push(unknown);
  const check = (key: 'actions' | 'resources', re: RegExp, what: string) => {
    if (params[key] === undefined) return;
    const items = paramItems(params[key]);
    if (!items.length) problems.push(`scope ${scope}: parameter ${key} is empty`);
    for (const x of items) if (!re.test(x)) problems.push(`scope ${scope}: ${key} item ${JSON.stringify(x)} is not ${what}`);
  };
  check('actions', ACTION, 'an IAM action (service:Action, wildcards allowed)');
  check('resources', RESOURCE, 'an ARN (arn:...) or *');
  const policy = policyFromParams(params);
  const size = policy ? JSON.stringify(policy).length : 0;
  if (size > AWS_MAX_SESSION_POLICY_CHARS) problems.push(`scope ${scope}: the session policy built from actions and resources is ${size} characters; AWS allows ${AWS_MAX_SESSION_POLICY_CHARS}`);
  return problems;
}

/** The session policy of one issuance (JSON text), or undefined for the role's full permissions. Parameters were checked (roleParamProblems). */
export function sessionPolicyText(sessionPolicy: Record<string, unknown> | undefined, params: Readonly<Record<string, string>>, values: Record<(typeof SESSION_POLICY_PLACEHOLDERS)[number], string>): string | undefined {
  if (!sessionPolicy) {
    const built = policyFromParams(params);
    return built && JSON.stringify(built);
  }
  const all: Record<string, string> = { ...values };
  for (const [k, v] of Object.entries(params)) all[`${PARAM}${k}`] = v;
  return JSON.stringify(renderTemplate(sessionPolicy, all));
}

/** Problems of a grant's sessionTags obligation for AWS (keys, charset, count, placeholders). */
export function sessionTagProblems(tags: Readonly<Record<string, string>> | undefined): string[] {
  if (!tags) return [];
  const problems: string[] = [];
  const seen = new Set(OWN_TAG_KEYS);
  for (const [key, value] of Object.entries(tags)) {
    if (!key.length || key.length > TAG_KEY_MAX || !TAG_CHARS.test(key)) problems.push(`session tag key ${JSON.stringify(key)}: 1–${TAG_KEY_MAX} characters of letters, digits, spaces and _ . : / = + - @`);
    if (/^(aws|agent-sts):/i.test(key)) problems.push(`session tag key ${key}: the prefixes aws: and agent-sts: are reserved`);
    else if (seen.has(key.toLowerCase())) problems.push(`session tag key ${key}: used twice (AWS compares tag keys without case)`);
    seen.add(key.toLowerCase());
    problems.push(...sessionTagTemplateProblems(key, value));
    const literal = sessionTagLiteral(value);
    if (!TAG_CHARS.test(literal) || literal.length > TAG_VALUE_MAX)
      problems.push(`session tag ${key}: the value's text must be at most ${TAG_VALUE_MAX} letters, digits, spaces and _ . : / = + - @ (identity values in placeholders are made to fit)`);
  }
  if (seen.size > MAX_SESSION_TAGS) problems.push(`${seen.size - OWN_TAG_KEYS.length} session tags: AWS allows ${MAX_SESSION_TAGS} per session, ${OWN_TAG_KEYS.length} of them agent-sts's own`);
  return problems;
}

/**
 * The session's tags: agent-sts's own (task, workload, person) and the obligation's, values
 * rendered for this identity, sanitised to AWS's charset and cut to 256 characters (a cut value
 * ends with a hash). Throws PolicyDenied when a tag references a value the identity lacks.
 */
export function sessionTagsFor(taskId: string, identity: BlendedIdentity, obligation: Readonly<Record<string, string>> | undefined): Tag[] {
  const tag = (key: string, value: string): Tag => ({ Key: sanitizeTag(key).slice(0, TAG_KEY_MAX), Value: fit(sanitizeTag(value), value, TAG_VALUE_MAX) });
  const own = [
    tag('agent-sts:task', taskId),
    tag('agent-sts:subject', identity.workload.subject),
    ...(identity.human ? [tag('agent-sts:human', identity.human.subject)] : []),
  ];
  const extra = obligation ? Object.entries(renderSessionTags(obligation, identity, taskId)).map(([k, v]) => tag(k, v)) : [];
  return [...own, ...extra];
}
