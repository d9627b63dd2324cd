import type { SqlDriverAdapterFactory } from '@prisma/driver-adapter-utils';
import { PrismaClient as SqliteClient } from './generated/sqlite/client.js';
import { PrismaClient as PostgresClient } from './generated/postgresql/client.js';
import { createAdapterFactory, providerForUrl, sqlitePathForUrl, type DbProvider } from './migrate.js';
import type { BatchWriter } from './batch.js';
import { createPrismaBatchWriter } from './prisma-batch-writer.js';
import { createSqliteBatchWriter } from './sqlite-batch-writer.js';

/**
 * The one storage interface. Both generated clients come from the same model file
 * (prisma/models.prisma), so their model APIs are identical; the SQLite client's type stands for both.
 */
export type Db = SqliteClient;

export interface Database {
  db: Db;
  provider: DbProvider;
  /** The group-commit path for tasks, credentials and audit records (see batch.ts). */
  batch: BatchWriter;
  close(): Promise<void>;
}

export async function openDatabase(url: string): Promise<Database> {
  const provider = providerForUrl(url);
  const adapter = createAdapterFactory(url);
  const db =
    provider === 'sqlite'
      ? new SqliteClient({ adapter: adapter as SqlDriverAdapterFactory })
      : (new PostgresClient({
          adapter: adapter as SqlDriverAdapterFactory,
        }) as unknown as Db);
  if (provider === 'sqlite') {
    // WAL for concurrent readers; synchronous=FULL so a committed audit row survives power loss.
    await db.$queryRawUnsafe('PRAGMA journal_mode = WAL');
    await db.$executeRawUnsafe('PRAGMA synchronous = FULL');
    await db.$executeRawUnsafe('PRAGMA busy_timeout = 5000');
    // This connection's occasional writes must not checkpoint on the event loop: the batch
    // writer's checkpoint thread does it (sqlite-batch-writer.ts).
    await db.$queryRawUnsafe('PRAGMA wal_autocheckpoint = 0');
  }
  const batch = provider === 'sqlite' ? createSqliteBatchWriter(sqlitePathForUrl(url)) : createPrismaBatchWriter(db);
  return {
    db,
    provider,
    batch,
    close: async () => {
      await batch.close();
      await db.$disconnect();
    },
  };
}
