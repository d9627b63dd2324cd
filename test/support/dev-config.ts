// The dev config (examples/agent-sts.dev.yaml) with its data in a directory of one's own: for the
// CLI tests and bench/startup.ts (no vitest here, so the bench can import it).
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseDocument } from 'yaml';

export const DEV_CONFIG = join(resolve(dirname(fileURLToPath(import.meta.url)), '..', '..'), 'examples', 'agent-sts.dev.yaml');

/** The dev config with every data path moved into `dir` (absolute paths); written to `dir`/agent-sts.yaml. */
export function writeDevConfig(dir: string, edit?: (doc: ReturnType<typeof parseDocument>) => void): string {
  const doc = parseDocument(readFileSync(DEV_CONFIG, 'utf8'));
  doc.setIn(['storage', 'url'], `file:${join(dir, 'data', 'agent-sts.db')}`);
  doc.setIn(['keys', 'kek'], { devGenerateInto: join(dir, 'data', 'dev-kek') });
  doc.setIn(['devIssuer', 'dir'], join(dir, 'data', 'dev-issuer'));
  const providers = doc.getIn(['trustProviders']) as { items: { get(k: string): unknown }[] };
  const devIndex = providers.items.findIndex((p) => p.get('name') === 'dev');
  if (devIndex < 0) throw new Error(`${DEV_CONFIG} has no trust provider named dev`);
  doc.setIn(['trustProviders', devIndex, 'config', 'jwksFile'], join(dir, 'data', 'dev-issuer', 'jwks.json'));
  edit?.(doc);
  const file = join(dir, 'agent-sts.yaml');
  writeFileSync(file, doc.toString());
  return file;
}
