#!/usr/bin/env node
// Run by `npm test` before `vitest run`: the integration and e2e tests need PostgreSQL, MariaDB/MySQL
// and Redis. Rather than letting them time out one by one (or skipping silently), fail at once and
// say how to start what is missing. Each check gives up after ~2 s.
import net from 'node:net';
import pg from 'pg';

const TIMEOUT_MS = 2000;

const services = [
  {
    name: 'PostgreSQL',
    envVar: 'AGENT_STS_TEST_PG_URL',
    url: process.env.AGENT_STS_TEST_PG_URL ?? 'postgres://postgres@127.0.0.1:5432/postgres',
    start: 'pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start',
    check: checkPostgres,
  },
  {
    name: 'MariaDB/MySQL',
    envVar: 'AGENT_STS_TEST_MYSQL_URL',
    url: process.env.AGENT_STS_TEST_MYSQL_URL ?? 'mysql://root@127.0.0.1:3306/',
    defaultPort: 3306,
    // Packet header (4 bytes), then protocol version 10 (handshake) or 0xff (error packet).
    looksRight: (b) => b.length >= 5 && (b[4] === 10 || b[4] === 0xff),
    start: 'start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd',
    check: checkTcp,
  },
  {
    name: 'Redis',
    envVar: 'AGENT_STS_TEST_REDIS_URL',
    url: process.env.AGENT_STS_TEST_REDIS_URL ?? 'redis://127.0.0.1:6379',
    defaultPort: 6379,
    hello: 'PING\r\n',
    looksRight: (b) => b[0] === 0x2b /* + */ || b[0] === 0x2d /* - */,
    start: 'redis-server --daemonize yes --bind 127.0.0.1 -::1 --port 6379 --save "" --appendonly no',
    check: checkTcp,
  },
];

/** The URL with any password replaced by ***. */
function redact(url) {
  try {
    const u = new URL(url);
    if (!u.password) return url;
    u.password = '***';
    return u.toString();
  } catch {
    return url.replace(/(\/\/[^/@:]*):[^/@]*@/, '$1:***@');
  }
}

function withTimeout(promise, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no answer within ${TIMEOUT_MS} ms (${what})`)), TIMEOUT_MS);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

async function checkPostgres(service) {
  const client = new pg.Client({
    connectionString: service.url,
    connectionTimeoutMillis: TIMEOUT_MS,
    query_timeout: TIMEOUT_MS,
  });
  client.on('error', () => {}); // reported through connect()/query()
  try {
    await withTimeout(
      (async () => {
        await client.connect();
        await client.query('select 1');
      })(),
      'connect + select 1',
    );
  } finally {
    client.end().catch(() => {});
  }
}

/**
 * Opens a TCP connection and waits for the server's first bytes, so that something that merely
 * accepts connections (a proxy, another program) does not pass. MySQL/MariaDB greets first (a
 * handshake packet, or an error packet, which still proves a server answered); Redis answers PING
 * with +PONG (or -NOAUTH/-ERR, which is fine too).
 */
function checkTcp(service) {
  const u = new URL(service.url);
  const host = (u.hostname || '127.0.0.1').replace(/^\[(.*)\]$/, '$1');
  const port = Number(u.port || service.defaultPort);
  return withTimeout(
    new Promise((resolve, reject) => {
      const socket = net.connect({ host, port });
      socket.once('connect', () => {
        if (service.hello) socket.write(service.hello);
      });
      socket.once('data', (chunk) => {
        socket.destroy();
        if (service.looksRight(chunk)) resolve();
        else reject(new Error(`${host}:${port} answered, but not like ${service.name}: ${JSON.stringify(chunk.subarray(0, 40).toString('latin1'))}`));
      });
      socket.once('error', (err) => {
        socket.destroy();
        reject(err);
      });
    }),
    `TCP connect to ${host}:${port} and wait for a greeting`,
  );
}

const results = await Promise.all(
  services.map(async (service) => {
    try {
      await service.check(service);
      return { service, ok: true };
    } catch (err) {
      return { service, ok: false, error: err instanceof Error ? err.message || err.code || String(err) : String(err) };
    }
  }),
);

const failed = results.filter((r) => !r.ok);
for (const { service, ok } of results) if (ok) console.log(`check-services: ${service.name} OK (${redact(service.url)})`);
if (failed.length > 0) {
  for (const { service, error } of failed) {
    console.error(
      [
        `check-services: ${service.name} is not available at ${redact(service.url)}: ${error}`,
        `  Start it with:   ${service.start}`,
        `  or point the tests at another server with ${service.envVar}=<url>`,
      ].join('\n'),
    );
  }
  console.error('check-services: the integration and e2e tests need these services; not running vitest. (.ci/run installs and starts them.)');
  process.exit(1);
}
console.log('check-services: OK');
process.exit(0);
