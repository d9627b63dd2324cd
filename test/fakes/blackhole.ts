// TCP upstreams that misbehave below any protocol, for the database issuers' failure tests. Real
// servers on loopback port 0 (node:net):
// - startTcpFake(): accepts connections and then sends only what it is told (a greeting on connect,
//   fixed answers to the first data chunks) — nothing at all is a black hole (a target that hangs),
//   bytes that are not the protocol are a "malformed" upstream (something else on the port);
// - startHoldingProxy(): forwards to a real server until the client sends a request matching
//   `holdAfter`, then withholds every answer on that connection: the upstream did the work, the
//   answer never arrives (a slow or partitioned server after the statement ran).
// Both record what they saw, so tests can tell what the client sent and whether it hung up.
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';

export interface TcpFakeConnection {
  /** Every byte the client sent on this connection, in order. */
  received: Buffer;
  /** The client closed or reset the connection (it gave up, or finished). */
  closedByClient: boolean;
}

export interface TcpFake {
  port: number;
  connections: TcpFakeConnection[];
  close(): Promise<void>;
}

export interface TcpFakeOptions {
  /** Sent as soon as a connection is accepted (protocols where the server speaks first, like MySQL's greeting). */
  onConnect?: Buffer;
  /** Answers to the client's first data chunks, one each, in order; after them: silence. */
  replies?: Buffer[];
}

/** A TCP server that accepts every connection and sends only `onConnect` / `replies`; never closes a connection itself. */
export async function startTcpFake(opts: TcpFakeOptions = {}): Promise<TcpFake> {
  const sockets = new Set<Socket>();
  const connections: TcpFakeConnection[] = [];
  const server = createServer((s) => {
    sockets.add(s);
    const conn: TcpFakeConnection = { received: Buffer.alloc(0), closedByClient: false };
    connections.push(conn);
    let chunk = 0;
    s.on('error', () => {});
    s.on('data', (d: Buffer) => {
      conn.received = Buffer.concat([conn.received, d]);
      const reply = opts.replies?.[chunk++];
      if (reply) s.write(reply);
    });
    s.on('close', () => {
      sockets.delete(s);
      if (!closing) conn.closedByClient = true;
    });
    if (opts.onConnect) s.write(opts.onConnect);
  });
  let closing = false;
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    connections,
    close: () =>
      new Promise<void>((r) => {
        closing = true;
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A black hole: accepts connections and never sends a byte. */
export const startBlackhole = () => startTcpFake();

/** One PostgreSQL backend message: type byte, int32 length (itself included), body. */
export function pgMessage(type: string, body: Buffer | string = Buffer.alloc(0)): Buffer {
  const b = Buffer.from(body);
  const head = Buffer.alloc(5);
  head.write(type, 0, 'latin1');
  head.writeInt32BE(b.length + 4, 1);
  return Buffer.concat([head, b]);
}

/** AuthenticationOk + ReadyForQuery(idle): a PostgreSQL server that lets anyone in (then the test decides). */
export const PG_LOGIN_OK = Buffer.concat([pgMessage('R', Buffer.from([0, 0, 0, 0])), pgMessage('Z', 'I')]);

/** One MySQL packet: 3-byte little-endian payload length, sequence id, payload. */
export function mysqlPacket(sequenceId: number, payload: Buffer | string): Buffer {
  const p = Buffer.from(payload);
  const head = Buffer.alloc(4);
  head.writeUIntLE(p.length, 0, 3);
  head[3] = sequenceId;
  return Buffer.concat([head, p]);
}

export interface HoldingProxy {
  port: number;
  /** Connections on which answers were withheld (the client sent a request matching `holdAfter`). */
  held: number;
  /** Connections whose client hung up while its answer was withheld. */
  heldThenClosedByClient: number;
  close(): Promise<void>;
}

/**
 * A TCP proxy to `target` that forwards both ways until the client sends bytes matching `holdAfter`
 * (read as latin1, e.g. /COMMIT/ or /CREATE USER/); from then on the server's answers on that
 * connection are swallowed. The request itself still reaches the server, which carries it out.
 */
export async function startHoldingProxy(target: { host: string; port: number }, holdAfter: RegExp): Promise<HoldingProxy> {
  const sockets = new Set<Socket>();
  const state = { held: 0, heldThenClosedByClient: 0 };
  let closing = false;
  const server = createServer((client) => {
    const upstream = connect(target.port, target.host);
    sockets.add(client).add(upstream);
    let holding = false;
    client.on('error', () => {});
    upstream.on('error', () => client.destroy());
    client.on('data', (d: Buffer) => {
      if (!holding && holdAfter.test(d.toString('latin1'))) {
        holding = true;
        state.held++;
      }
      upstream.write(d);
    });
    upstream.on('data', (d: Buffer) => {
      if (!holding) client.write(d);
    });
    client.on('close', () => {
      sockets.delete(client);
      if (holding && !closing) state.heldThenClosedByClient++;
      upstream.destroy();
    });
    upstream.on('close', () => {
      sockets.delete(upstream);
      if (!holding) client.destroy();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as AddressInfo).port,
    get held() {
      return state.held;
    },
    get heldThenClosedByClient() {
      return state.heldThenClosedByClient;
    },
    close: () =>
      new Promise<void>((r) => {
        closing = true;
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}
