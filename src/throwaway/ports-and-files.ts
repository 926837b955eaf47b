// Small OS-level helpers of the throwaway servers: a free loopback port, server.log tails, and the
// synchronous waits and removals the exit hook needs (nothing async runs there).
import { rmSync, statSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createServer } from 'node:net';

/** A port nothing listens on right now (it can still be taken before the server binds it). */
export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const address = server.address();
  await new Promise((resolve) => server.close(resolve));
  if (address === null || typeof address === 'string') throw new Error('Could not pick a free port');
  return address.port;
}

/** The end of a file from byte `from` on (at most `maxBytes`), for error messages. */
export async function fileTail(file: string, from = 0, maxBytes = 4096): Promise<string> {
  try {
    const handle = await open(file, 'r');
    try {
      const { size } = await handle.stat();
      const start = Math.max(from, size - maxBytes);
      const buffer = Buffer.alloc(Math.max(0, size - start));
      await handle.read(buffer, 0, buffer.length, start);
      return buffer.toString('utf8');
    } finally {
      await handle.close();
    }
  } catch {
    return '(no server.log)';
  }
}

/** A file's size, 0 when it does not exist yet. */
export function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/** Blocks the thread until `done()` or the deadline: only for the exit hook, where nothing async runs. */
export function waitSync(done: () => boolean, timeoutMs: number): void {
  const cell = new Int32Array(new SharedArrayBuffer(4));
  for (const deadline = Date.now() + timeoutMs; !done() && Date.now() < deadline; ) Atomics.wait(cell, 0, 0, 20);
}

/** Removes a dir tree; false when something got in the way (a copy still writing into it). */
export function removeSync(dir: string): boolean {
  try {
    rmSync(dir, { recursive: true, force: true });
    return true;
  } catch {
    return false;
  }
}
