/**
 * Policy conditions in CEL (https://cel.dev), compiled once at load and evaluated per decision.
 *
 * Why CEL: a small, non-Turing-complete expression language made for exactly this (Kubernetes
 * ValidatingAdmissionPolicy, Envoy RBAC, Google IAM Conditions use it), so policy authors may
 * already know it, expressions always terminate, and there is no I/O.
 *
 * Why @marcbachmann/cel-js and not @bufbuild/cel (both compared at 8.0.0 / 0.6.1):
 * - one dependency, zero transitive ones; @bufbuild/cel pulls @bufbuild/protobuf (peer),
 *   @bufbuild/cel-spec (6 MB) and @bufbuild/re2;
 * - compile-once / evaluate-many with a typed environment: variables are declared with a schema,
 *   so `reqest.lifetime` or `request.lifetime + "x"` is a load error, not a runtime surprise;
 * - about 5-7x faster per evaluation in our measurement (600k/s vs 130k/s for a typical
 *   condition), which matters for the decisions-per-second target;
 * - tree-walking interpreter: no eval()/new Function (neither library uses them);
 * - actively maintained (8.0.0 in 2026, MIT), covers macros (all/exists/...), timestamps with
 *   time zones, custom functions.
 * What we give up: @bufbuild/cel runs the official cel-spec conformance suite and uses RE2 for
 * `matches()`; cel-js uses JavaScript RegExp there, so a pathological `matches()` pattern could
 * backtrack. Policy authors are the platform team (reviewed files), and subject patterns are
 * better written in `subjectPattern` anyway. Revisit if policies ever come from less trusted hands.
 */
import { BlockList, isIP } from 'node:net';
import { Environment } from '@marcbachmann/cel-js';
import type { BlendedIdentity } from '../core/types.js';

/** The facts a condition sees. Integers are bigint (CEL int). */
export interface ConditionInput {
  identity: {
    workload: { provider: string; providerType: string; subject: string; attributes: Record<string, string> };
    human: { present: boolean; provider: string; issuer: string; subject: string; email: string; emailDomain: string; groups: string[]; roles: string[] };
  };
  request: { kind: string; target: string; scopes: string[]; lifetime: bigint };
  env: { now: Date; hour: bigint; weekday: bigint; clientAddress: string };
  delegation: { depth: bigint; actors: string[]; delegatedBy: string };
}

/** What is known about where and when a request happens (the exchange passes it from CallContext). */
export interface PolicyEnvironment {
  now?: Date;
  clientAddress?: string;
}

const networks = new Map<string, BlockList | null>();
/** `inNetwork(env.clientAddress, "10.0.0.0/8")`: false for an empty or unparsable address. */
function inNetwork(address: string, cidr: string): boolean {
  let list = networks.get(cidr);
  if (list === undefined) {
    const [net, bits] = cidr.split('/');
    const family = isIP(net ?? '');
    const prefix = Number(bits ?? (family === 6 ? 128 : 32));
    list = family && Number.isInteger(prefix) ? new BlockList() : null;
    list?.addSubnet(net!, prefix, family === 6 ? 'ipv6' : 'ipv4');
    if (networks.size < 10_000) networks.set(cidr, list);
  }
  const family = isIP(address);
  return Boolean(list && family && list.check(address, family === 6 ? 'ipv6' : 'ipv4'));
}

const env = new Environment()
  .registerVariable({
    name: 'identity',
    schema: {
      workload: { provider: 'string', providerType: 'string', subject: 'string', attributes: 'map<string, string>' },
      human: { present: 'bool', provider: 'string', issuer: 'string', subject: 'string', email: 'string', emailDomain: 'string', groups: 'list<string>', roles: 'list<string>' },
    },
  })
  .registerVariable({ name: 'request', schema: { kind: 'string', target: 'string', scopes: 'list<string>', lifetime: 'int' } })
  .registerVariable({ name: 'env', schema: { now: 'google.protobuf.Timestamp', hour: 'int', weekday: 'int', clientAddress: 'string' } })
  .registerVariable({ name: 'delegation', schema: { depth: 'int', actors: 'list<string>', delegatedBy: 'string' } })
  .registerFunction('inNetwork(string, string): bool', inNetwork);

export interface Condition {
  /** The expression as written (compared textually by `policy diff`). */
  source: string;
  /** true/false, or the reason it could not be evaluated (callers deny: fail closed). */
  test(input: ConditionInput): { ok: boolean; error?: string };
}

/** Parses and type-checks; throws Error(reason) when the expression is not a valid bool condition. */
export function compileCondition(source: string): Condition {
  let program: ReturnType<typeof env.parse>;
  try {
    program = env.parse(source);
  } catch (e) {
    throw new Error(`condition does not parse: ${firstLine(e)}`);
  }
  const checked = program.check();
  if (!checked.valid) throw new Error(`condition is not valid: ${firstLine(checked.error)}`);
  if (checked.type !== 'bool' && checked.type !== 'dyn') throw new Error(`condition must be a bool expression, not ${checked.type}`);
  return {
    source,
    test(input) {
      try {
        const v: unknown = program(input as unknown as Record<string, unknown>);
        return v === true ? { ok: true } : v === false ? { ok: false } : { ok: false, error: 'condition did not evaluate to a bool' };
      } catch (e) {
        return { ok: false, error: `condition could not be evaluated: ${firstLine(e)}` };
      }
    },
  };
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0]!;
}

/** Builds the condition input once per decision. */
export function conditionInput(
  id: BlendedIdentity,
  req: { kind: string; target?: string; scopes?: string[]; lifetime?: number },
  where: PolicyEnvironment,
): ConditionInput {
  const now = where.now ?? new Date();
  const h = id.human;
  return {
    identity: {
      workload: { provider: id.workload.provider, providerType: id.workload.providerType, subject: id.workload.subject, attributes: id.workload.attributes },
      human: {
        present: Boolean(h),
        provider: h?.provider ?? '',
        issuer: h?.issuer ?? '',
        subject: h?.subject ?? '',
        email: h?.email ?? '',
        emailDomain: h?.email?.split('@')[1]?.toLowerCase() ?? '',
        groups: h?.groups ?? [],
        roles: h?.roles ?? [],
      },
    },
    request: { kind: req.kind, target: req.target ?? '', scopes: req.scopes ?? [], lifetime: BigInt(Math.floor(req.lifetime ?? 0)) },
    env: { now, hour: BigInt(now.getUTCHours()), weekday: BigInt(now.getUTCDay()), clientAddress: where.clientAddress ?? '' },
    delegation: { depth: BigInt(id.priorActors.length + 1), actors: id.priorActors.map((a) => a.sub), delegatedBy: id.priorActors[0]?.sub ?? '' },
  };
}
