// Prisma CLI configuration. Only `prisma generate` is used from the CLI (offline);
// migrations are generated and applied with the WebAssembly schema engine (src/storage/migrate.ts).
import { defineConfig } from 'prisma/config';

export default defineConfig({
  schema: 'prisma/generated/sqlite/schema.prisma',
});
