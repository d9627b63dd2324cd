import type { TargetConfig } from '../config/config-schema.js';

/** RFC 8707 §2 pitfall: normalise (scheme/host case, default port) and then compare exactly; never prefix-match. */
export function normalizeResource(uri: string): string {
  const u = new URL(uri);
  u.hash = '';
  return u.toString();
}

export function createTargetResolver(targets: readonly TargetConfig[]) {
  const byResource = new Map<string, TargetConfig>();
  const byAudience = new Map<string, TargetConfig>();
  for (const t of targets) {
    for (const r of t.resources) byResource.set(normalizeResource(r), t);
    for (const a of t.audiences) byAudience.set(a, t);
  }
  return {
    resolve(req: { resource?: string; audience?: string }): TargetConfig | undefined {
      if (req.resource !== undefined) return byResource.get(normalizeResource(req.resource));
      if (req.audience !== undefined) return byAudience.get(req.audience);
      return undefined;
    },
    /** The target an access token of ours was issued for, from its `aud` (a resource URI or an audience value, as requested). */
    ofAudience(aud: string): TargetConfig | undefined {
      const t = byAudience.get(aud);
      if (t) return t;
      try {
        return byResource.get(normalizeResource(aud));
      } catch {
        return undefined;
      }
    },
    byName: (name: string) => targets.find((t) => t.name === name),
  };
}
export type TargetResolver = ReturnType<typeof createTargetResolver>;
