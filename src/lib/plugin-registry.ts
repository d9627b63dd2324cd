import { ConfigError } from '../errors/sts-errors.js';

export interface PluginCatalog<P extends { type: string }> {
  get(type: string): P;
  types(): string[];
}

export function createPluginCatalog<P extends { type: string }>(plugins: readonly P[]): PluginCatalog<P> {
  const byType = new Map(plugins.map((p) => [p.type, p] as const));
  if (byType.size !== plugins.length) throw new Error('two plugins share a type');
  return {
    get(type) {
      const p = byType.get(type);
      if (!p) throw new ConfigError([`unknown type "${type}" (known: ${[...byType.keys()].join(', ')})`]);
      return p;
    },
    types: () => [...byType.keys()],
  };
}
