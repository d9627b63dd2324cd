#!/usr/bin/env node
// Generates one Prisma schema per provider from prisma/models.prisma (the single source of truth).
// A schema cannot declare two providers, so each dialect gets its own schema, client and migrations.
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
export const PROVIDERS = ['sqlite', 'postgresql'];

export function variantSchema(provider, models) {
  return `// GENERATED from prisma/models.prisma by scripts/prisma-variants.mjs. Do not edit.
generator client {
  provider = "prisma-client"
  output   = "../../../src/storage/generated/${provider}"
  moduleFormat = "esm"
  importFileExtension = "js"
}

datasource db {
  provider = "${provider}"
}

${models}`;
}

const models = readFileSync(join(root, 'prisma/models.prisma'), 'utf8');
for (const provider of PROVIDERS) {
  const file = join(root, 'prisma/generated', provider, 'schema.prisma');
  mkdirSync(dirname(file), { recursive: true });
  writeFileSync(file, variantSchema(provider, models));
}
console.log(`prisma: wrote ${PROVIDERS.map((p) => `prisma/generated/${p}/schema.prisma`).join(', ')}`);
