import { readFileSync } from 'node:fs';
import { z } from 'zod';
import { Secret } from '../core/secret.js';
import { unseal } from '../lib/crypto.js';

/**
 * Secrets in config are references, never inline values (except an explicit dev-only escape
 * hatch): an environment variable, a file, or `sealed` — an AES-256-GCM envelope under the
 * key-encryption key, bound to the one issuer instance it belongs to, written by agent-sts itself
 * when a platform team hands it a secret (admin API, `agent-sts issuers seal`).
 */
export const SecretRefSchema = z.union([
  z.object({ fromEnv: z.string().min(1) }).strict(),
  z.object({ fromFile: z.string().min(1) }).strict(),
  z.object({ sealed: z.string().regex(/^v1\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*$/, 'a sealed secret made by agent-sts') }).strict(),
  z.object({ insecureValue: z.string() }).strict(),
]);
export type SecretRef = z.infer<typeof SecretRefSchema>;

/** Resolves a reference when the secret is needed (plugins call it per use: rotated files are picked up). */
export type SecretResolver = (ref: SecretRef, where: string) => Secret<string>;

/** Additional authenticated data of a sealed issuer secret: it opens only for the issuer it was sealed for. */
export const sealedSecretAad = (issuerName: string) => `credential-issuer-secret:${issuerName}`;

/** The resolver handed to one issuer instance. */
export function secretResolverFor(issuerName: string, env: NodeJS.ProcessEnv, kek: () => Buffer): SecretResolver {
  return (ref, where) => {
    if ('sealed' in ref) {
      try {
        return new Secret(unseal(kek(), ref.sealed, sealedSecretAad(issuerName)));
      } catch (e) {
        throw new Error(`${where}: ${(e as Error).message} (a sealed secret opens only for the issuer it was sealed for, under the same key-encryption key)`);
      }
    }
    return resolveSecretRef(ref, env, where);
  };
}

export function resolveSecretRef(ref: SecretRef, env: NodeJS.ProcessEnv, where: string): Secret<string> {
  if ('sealed' in ref) throw new Error(`${where}: a sealed secret can only be used by a credential issuer`);
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
