import { z } from 'zod';

export const PolicyDuration = z.union([z.number().int().positive(), z.string().regex(/^\d+\s*(s|m|h|d)?$/, 'a duration like 90s, 15m, 2h')]);

const stringMap = z.record(z.string(), z.union([z.string(), z.array(z.string()).nonempty()]));

/** Who: a workload, matched by provider instance, canonical subject and attributes. */
export const WorkloadMatchSchema = z
  .object({
    provider: z.string().optional(),
    subject: z.string().optional(),
    /** Regular expression, always anchored (^...$) when compiled. */
    subjectPattern: z.string().optional(),
    /** Attribute name -> exact value (or list of accepted values). All must match. */
    attributes: stringMap.optional(),
  })
  .strict()
  .refine((w) => !(w.subject && w.subjectPattern), 'use either subject or subjectPattern, not both');

/** `required`: only with a human; `forbidden`: never with one; `optional` (default): either. */
export const HumanPresenceSchema = z.enum(['required', 'optional', 'forbidden']);

export const HumanMatchSchema = z
  .object({
    presence: HumanPresenceSchema.default('optional'),
    provider: z.string().optional(),
    subjects: z.array(z.string()).optional(),
    /** The human must be in at least one of these groups. */
    groups: z.array(z.string()).optional(),
    emailDomains: z.array(z.string()).optional(),
  })
  .strict();

export const GrantSchema = z
  .object({
    /** Target name (see `targets`). */
    target: z.string().min(1),
    /** Scopes this rule may grant at the target. Empty = only a scope-less credential. */
    scopes: z.array(z.string().min(1)).default([]),
    maxTtl: PolicyDuration.optional(),
  })
  .strict();

export const PolicyRuleSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only'),
    description: z.string().optional(),
    workload: WorkloadMatchSchema,
    human: HumanMatchSchema.optional(),
    /** Allows the startup exchange (attestation -> agent token) and caps the task it opens. */
    agentToken: z.object({ maxTtl: PolicyDuration.optional() }).strict().optional(),
    grants: z.array(GrantSchema).default([]),
  })
  .strict();

export const PolicySchema = z
  .object({
    /** v1 rules (still supported; translated into the same model as v2 documents). */
    rules: z.array(PolicyRuleSchema).default([]),
    /** v2 documents inline (`apiVersion: agent-sts.dev/v2`), validated by policy-document.ts. */
    documents: z.array(z.unknown()).optional(),
    /** A directory (or file) of v2 documents, relative to the configuration file. */
    dir: z.string().min(1).optional(),
  })
  .strict();

export type PolicyRule = z.infer<typeof PolicyRuleSchema>;
export type PolicyConfig = z.infer<typeof PolicySchema>;
