import { z } from 'zod';

const duration = z.union([z.number().int().positive(), z.string().regex(/^\d+\s*(s|m|h|d)?$/, 'a duration like 90s, 15m, 2h')]);

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

export const HumanMatchSchema = z
  .object({
    /** `required`: only with a human; `forbidden`: never with one; `optional` (default): either. */
    presence: z.enum(['required', 'optional', 'forbidden']).default('optional'),
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
    maxTtl: duration.optional(),
  })
  .strict();

export const PolicyRuleSchema = z
  .object({
    id: z.string().regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only'),
    description: z.string().optional(),
    workload: WorkloadMatchSchema,
    human: HumanMatchSchema.optional(),
    /** Allows the startup exchange (attestation -> agent token) and caps the task it opens. */
    agentToken: z.object({ maxTtl: duration.optional() }).strict().optional(),
    grants: z.array(GrantSchema).default([]),
  })
  .strict();

export const PolicySchema = z
  .object({
    rules: z.array(PolicyRuleSchema).default([]),
  })
  .strict();

export type PolicyRule = z.infer<typeof PolicyRuleSchema>;
export type PolicyConfig = z.infer<typeof PolicySchema>;
