import { connect, createServer } from 'node:net';
import type { Server, Socket } from 'node:net';

/** One direction of a proxied connection. Chunks wait in `queue` while latency is on, in order. */
interface Lane {
  to: Socket | null;
  queue: Array<{ at: number; chunk: Buffer | null }>; // null = the sender closed: end `to`
  timer: NodeJS.Timeout | null;
  /** Dark for good (darkenExisting): drops everything, never closes, never heals. */
  dark?: boolean;
}

interface Pair {
  client: Socket;
  upstream: Socket | null; // null: accepted during a blackhole, never forwarded
  up: Lane;
  down: Lane;
}

/**
 * A TCP proxy in front of PostgreSQL that can misbehave on demand: drop traffic without closing
 * anything (half-open network), reset connections, refuse new ones, or add latency.
 */
export class FaultProxy {
  readonly host: string = '127.0.0.1';
  readonly #target: { host: string; port: number };
  readonly #pairs = new Set<Pair>();
  #server: Server | null = null;
  #accepting: Promise<void> | null = null;
  #port = 0;
  #blackholed = false;
  #blackholeTimer: NodeJS.Timeout | undefined;
  #refuseTimer: NodeJS.Timeout | undefined;
  #latencyMs = 0;
  #droppedBytes = 0;
  #closed = false;

  private constructor(target: { host: string; port: number }) {
    this.#target = { host: target.host, port: target.port };
  }

  static async start(target: { host: string; port: number }): Promise<FaultProxy> {
    const proxy = new FaultProxy(target);
    await proxy.#listen(0);
    return proxy;
  }

  get port(): number {
    return this.#port;
  }

  get connectionCount(): number {
    return this.#pairs.size;
  }

  /** Bytes thrown away by blackhole(), so tests can wait until traffic has really been lost. */
  get droppedBytes(): number {
    return this.#droppedBytes;
  }

  /** Clears every fault. Listening again after refuse() is async: await accept() to know it is done. */
  passThrough(): void {
    this.#heal();
    this.#latencyMs = 0;
    if (!this.#server) this.#acceptInBackground();
  }

  blackhole(ms?: number): void {
    this.#blackholed = true;
    clearTimeout(this.#blackholeTimer);
    if (ms !== undefined) this.#blackholeTimer = setTimeout(() => this.#heal(), ms).unref();
  }

  /**
   * Drops all traffic of the connections open now, for good, without closing them, while new
   * connections pass: a path that went dark while the server stays reachable.
   */
  darkenExisting(): void {
    for (const pair of this.#pairs) {
      pair.up.dark = true;
      pair.down.dark = true;
    }
  }

  resetAll(): void {
    for (const pair of this.#pairs) this.#destroyPair(pair, true);
  }

  async refuse(ms?: number): Promise<void> {
    clearTimeout(this.#refuseTimer);
    await this.#accepting?.catch(() => {});
    const server = this.#server;
    this.#server = null;
    // close() stops listening at once; live connections stay up (its callback would wait for them).
    server?.close();
    if (ms !== undefined) this.#refuseTimer = setTimeout(() => this.#acceptInBackground(), ms).unref();
  }

  accept(): Promise<void> {
    clearTimeout(this.#refuseTimer);
    if (this.#server || this.#closed) return Promise.resolve();
    // Shared, so a manual accept() racing the refuse(ms) timer does not bind the port twice.
    this.#accepting ??= this.#listen(this.#port).finally(() => (this.#accepting = null));
    return this.#accepting;
  }

  /** Nobody awaits this, so a failure (the port was taken meanwhile) becomes a warning, not a crash. */
  #acceptInBackground(): void {
    this.accept().catch((error: Error) =>
      process.emitWarning(`FaultProxy could not listen again on port ${this.#port}: ${error.message}`),
    );
  }

  latency(ms: number): void {
    this.#latencyMs = Math.max(0, ms);
  }

  async close(): Promise<void> {
    this.#closed = true;
    clearTimeout(this.#blackholeTimer);
    clearTimeout(this.#refuseTimer);
    this.resetAll();
    await this.#accepting?.catch(() => {});
    const server = this.#server;
    this.#server = null;
    if (server) await new Promise((resolve) => server.close(resolve));
  }

  async #listen(port: number): Promise<void> {
    const server = createServer((client) => this.#onConnection(client));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, this.host, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const address = server.address();
    if (address === null || typeof address === 'string') throw new Error('FaultProxy: unexpected server address');
    this.#port = address.port;
    if (this.#closed) server.close();
    else this.#server = server;
  }

  #onConnection(client: Socket): void {
    client.setNoDelay(true);
    const upstream = this.#blackholed ? null : connect({ ...this.#target, noDelay: true });
    const pair: Pair = {
      client,
      upstream,
      up: { to: upstream, queue: [], timer: null },
      down: { to: client, queue: [], timer: null },
    };
    this.#pairs.add(pair);
    // Errors always end in 'close', which is where teardown happens.
    client.on('error', () => {});
    client.on('data', (chunk: Buffer) => this.#send(pair.up, chunk));
    client.on('close', () => this.#onSideClosed(pair, pair.up));
    upstream?.on('error', () => {});
    upstream?.on('data', (chunk: Buffer) => this.#send(pair.down, chunk));
    upstream?.on('close', () => this.#onSideClosed(pair, pair.down));
  }

  /** Passes the close on to the other side like a FIN (in order with data), unless the network is down. */
  #onSideClosed(pair: Pair, lane: Lane): void {
    if (pair.client.destroyed && (pair.upstream?.destroyed ?? true)) this.#destroyPair(pair, false);
    else this.#send(lane, null);
  }

  #send(lane: Lane, chunk: Buffer | null): void {
    if (this.#blackholed || lane.dark === true || !lane.to) {
      this.#droppedBytes += chunk?.length ?? 0;
      return;
    }
    if (this.#latencyMs === 0 && lane.queue.length === 0) {
      this.#deliver(lane, chunk);
      return;
    }
    const last = lane.queue.at(-1)?.at ?? 0;
    lane.queue.push({ at: Math.max(Date.now() + this.#latencyMs, last), chunk });
    this.#schedule(lane);
  }

  #schedule(lane: Lane): void {
    const head = lane.queue[0];
    if (lane.timer || !head) return;
    lane.timer = setTimeout(() => {
      lane.timer = null;
      const now = Date.now();
      for (let item = lane.queue[0]; item && item.at <= now; item = lane.queue[0]) {
        lane.queue.shift();
        // A blackhole that started while the chunk was in flight loses it too.
        if (this.#blackholed) this.#droppedBytes += item.chunk?.length ?? 0;
        else this.#deliver(lane, item.chunk);
      }
      this.#schedule(lane);
    }, Math.max(0, head.at - Date.now())).unref();
  }

  #deliver(lane: Lane, chunk: Buffer | null): void {
    const to = lane.to;
    if (!to || to.destroyed) return;
    if (chunk === null) to.end();
    else to.write(chunk);
  }

  /**
   * Back to pass-through. A side that closed while the network was down never told its peer, so that
   * connection is torn down now, as the peer's next packet would have been answered with a reset.
   */
  #heal(): void {
    this.#blackholed = false;
    clearTimeout(this.#blackholeTimer);
    for (const pair of this.#pairs) {
      if (pair.up.dark !== true && pair.upstream && (pair.client.destroyed || pair.upstream.destroyed)) this.#destroyPair(pair, true);
    }
  }

  #destroyPair(pair: Pair, reset: boolean): void {
    this.#pairs.delete(pair);
    for (const lane of [pair.up, pair.down]) {
      if (lane.timer) clearTimeout(lane.timer);
      lane.timer = null;
      lane.queue.length = 0;
    }
    if (reset && !pair.client.destroyed) pair.client.resetAndDestroy();
    else pair.client.destroy();
    pair.upstream?.destroy();
  }
}
