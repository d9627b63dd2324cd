/** See build-freshness.js. */
export function buildFreshness(root: string): 'missing' | 'stale' | 'fresh';
export function buildEntry(root: string): string;
