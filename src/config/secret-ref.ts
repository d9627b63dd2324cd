import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { Secret } from '../core/secret.js';

/** Secrets in config are references, never inline values (except an explicit dev-only escape hatch). */
export const SecretRefSchema = z.union([
  z.object({ fromEnv: z.string().min(1) }).strict(),
  z.object({ fromFile: z.string().min(1) }).strict(),
  z.object({ insecureValue: z.string() }).strict(),
]);
export type SecretRef = z.infer<typeof SecretRefSchema>;

export function resolveSecretRef(ref: SecretRef, env: NodeJS.ProcessEnv, where: string): Secret<string> {
  if ('fromEnv' in ref) {
    const v = env[ref.fromEnv];
    if (v === undefined || v === '') throw new Error(`${where}: environment variable ${ref.fromEnv} is not set`);
    return new Secret(v);
  }
  if ('fromFile' in ref) {
    try {
      return new Secret(readFileSync(ref.fromFile, 'utf8').trim());
    } catch (e) {
      throw new Error(`${where}: cannot read ${ref.fromFile}: ${(e as NodeJS.ErrnoException).code ?? 'error'}`);
    }
  }
  return new Secret(ref.insecureValue);
}
