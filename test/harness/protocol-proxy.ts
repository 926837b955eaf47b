// A misbehaving server: a plaintext TCP proxy in front of a real one that can slip an
// out-of-order protocol message to an idle client, to provoke pg.Client's protocol errors.
// TLS must be off (`ssl: false`): the injected bytes are plaintext.
import { createServer, connect, type Server, type Socket } from 'node:net';

/** Backend message types the proxy can inject, by their protocol type byte. */
export type InjectedMessage = '1' | 'C' | 'D' | 'T' | 'I' | 's' | 'G' | 'd';

// The body of each message, after its type byte and length.
const BODIES: Record<InjectedMessage, Buffer> = {
  '1': Buffer.alloc(0), // ParseComplete
  C: Buffer.from('SELECT 1\0'), // CommandComplete
  D: Buffer.from([0, 0]), // DataRow with no columns
  T: Buffer.from([0, 0]), // RowDescription with no fields
  I: Buffer.alloc(0), // EmptyQueryResponse
  s: Buffer.alloc(0), // PortalSuspended
  G: Buffer.from([0, 0, 0]), // CopyInResponse: text format, no columns
  d: Buffer.from('stray\n'), // CopyData
};

/** Encodes one backend message. */
export function backendMessage(type: InjectedMessage): Buffer {
  const body = BODIES[type];
  const header = Buffer.alloc(5);
  header.write(type, 0, 'latin1');
  header.writeInt32BE(body.length + 4, 1);
  return Buffer.concat([header, body]);
}

interface Session {
  readonly client: Socket;
  readonly server: Socket;
  // Bytes of the server's current, incomplete message, so an injection lands on a message boundary.
  pending: number;
  readyCount: number;
}

/** The proxy. Start with {@link ProtocolProxy.start}, stop with {@link ProtocolProxy.close}. */
export class ProtocolProxy {
  readonly #server: Server;
  readonly #sessions = new Set<Session>();

  private constructor(server: Server) {
    this.#server = server;
  }

  /** Listens on 127.0.0.1 at a free port, forwarding to `target`. */
  static async start(target: { host: string; port: number }): Promise<ProtocolProxy> {
    const server = createServer();
    const proxy = new ProtocolProxy(server);
    server.on('connection', (client) => proxy.#accept(client, target));
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    return proxy;
  }

  get port(): number {
    return (this.#server.address() as { port: number }).port;
  }

  /** Sessions whose server has said ReadyForQuery at least once (open and past startup). */
  get readySessions(): number {
    let n = 0;
    for (const s of this.#sessions) if (s.readyCount > 0) n++;
    return n;
  }

  /** Sends `type` to every session that is idle (last server message complete). Returns how many got it. */
  inject(type: InjectedMessage): number {
    let sent = 0;
    for (const session of this.#sessions) {
      if (session.readyCount === 0 || session.pending !== 0 || session.client.destroyed) continue;
      session.client.write(backendMessage(type));
      sent++;
    }
    return sent;
  }

  async close(): Promise<void> {
    for (const { client, server } of this.#sessions) {
      client.destroy();
      server.destroy();
    }
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  #accept(client: Socket, target: { host: string; port: number }): void {
    const server = connect(target.port, target.host);
    const session: Session = { client, server, pending: 0, readyCount: 0 };
    this.#sessions.add(session);
    let buffered = Buffer.alloc(0);
    server.on('data', (chunk: Buffer) => {
      // Track message boundaries and count ReadyForQuery ('Z') messages.
      buffered = Buffer.concat([buffered, chunk]);
      while (buffered.length >= 5) {
        const length = buffered.readInt32BE(1) + 1;
        if (buffered.length < length) break;
        if (buffered[0] === 0x5a) session.readyCount++;
        buffered = buffered.subarray(length);
      }
      session.pending = buffered.length;
      client.write(chunk);
    });
    client.on('data', (chunk: Buffer) => server.write(chunk));
    const end = (): void => {
      client.destroy();
      server.destroy();
      this.#sessions.delete(session);
    };
    client.on('error', end).on('close', end);
    server.on('error', end).on('close', end);
  }
}
