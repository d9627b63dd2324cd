// Every example under examples/trust-providers/ is a valid `providers add` file: the shape the CLI
// reads, and a config its plugin's schema accepts (the aws-ec2 placeholder certificate is swapped
// for a test certificate: AWS's own must be pasted by the operator).
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { describe, expect, it } from 'vitest';
import { trustProviderCatalog } from '../../src/trust-providers/catalog.js';
import { ROOT } from '../support/cli.js';
import { createEc2Signer } from '../fakes/aws-ec2-documents.js';

const dir = join(ROOT, 'examples', 'trust-providers');
const files = readdirSync(dir).filter((f) => f.endsWith('.yaml'));

describe('examples/trust-providers', () => {
  it('has one example per platform provider type', () => {
    expect(files.map((f) => f.replace('.yaml', '')).sort()).toEqual(['aws-ec2', 'aws-iam', 'azure', 'gcp', 'kubernetes']);
  });
  it.each(files)('%s validates with its plugin schema', (f) => {
    const text = readFileSync(join(dir, f), 'utf8');
    const doc = parse(text) as { name: string; type: string; config: { certificates?: Record<string, string> } };
    if (doc.type === 'aws-ec2') {
      expect(Object.values(doc.config.certificates!).every((pem) => pem.includes('REPLACE-WITH-AWS'))).toBe(true);
      for (const region of Object.keys(doc.config.certificates!)) doc.config.certificates![region] = createEc2Signer().certificatePem;
    }
    expect(Object.keys(doc).sort()).toEqual(['config', 'name', 'type']);
    const r = trustProviderCatalog.get(doc.type).configSchema.safeParse(doc.config);
    expect(r.success, JSON.stringify(!r.success && r.error.issues)).toBe(true);
  });
});
