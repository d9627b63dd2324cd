import { chmodSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { randomBytes } from 'node:crypto';
import { resolveSecretRef, type SecretRef } from '../config/secret-ref.js';
import { Secret } from '../core/secret.js';

export type KekSource = SecretRef | { devGenerateInto: string };

/** Decodes a 32-byte key given as base64/base64url (44/43 chars) or hex (64 chars). */
export function decodeKek(text: string): Buffer {
  const t = text.trim();
  const buf = /^[0-9a-fA-F]{64}$/.test(t) ? Buffer.from(t, 'hex') : Buffer.from(t, 'base64');
  if (buf.length !== 32) throw new Error('key-encryption key must be 32 bytes (base64 or hex encoded)');
  return buf;
}

/**
 * Loads the key-encryption key from outside the database. `devGenerateInto` creates one in the
 * data directory on first use — convenient for trying agent-sts, never for production (the key
 * then sits next to the data it protects), so the caller warns loudly.
 */
export function loadKek(source: KekSource, env: NodeJS.ProcessEnv): { kek: Secret<Buffer>; generated: boolean; devFile?: string } {
  if ('devGenerateInto' in source) {
    const file = source.devGenerateInto;
    let generated = false;
    if (!existsSync(file)) {
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, randomBytes(32).toString('base64') + '\n', { mode: 0o600 });
      chmodSync(file, 0o600);
      generated = true;
    }
    return { kek: new Secret(decodeKek(readFileSync(file, 'utf8'))), generated, devFile: file };
  }
  return { kek: new Secret(decodeKek(resolveSecretRef(source, env, 'keys.kek').reveal())), generated: false };
}
