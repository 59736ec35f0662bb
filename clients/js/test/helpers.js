// What the tests share: a real mock-server speaking PROTOCOL.md's default encoding, and a TCP
// proxy between a client and it that can cut or stall every connection through it.

import { spawn } from 'node:child_process';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createInterface } from 'node:readline';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../..');

/** The mock-server binary: $KIM_MOCK_SERVER, or the workspace's debug build. */
export const MOCK_SERVER = process.env.KIM_MOCK_SERVER ?? path.join(root, 'target/debug/mock-server');

/**
 * Starts mock-server with `--encoding default` on `listen` (port 0: a free one); resolves once
 * it listens, with its address and the process.
 * @param {{ listen?: string, args?: string[] }} [options]
 */
export function startServer({ listen = '127.0.0.1:0', args = [] } = {}) {
  const child = spawn(
    MOCK_SERVER,
    ['--transport', 'ws', '--listen', listen, '--encoding', 'default', ...args],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, RUST_LOG: 'warn' } },
  );
  return new Promise((resolve, reject) => {
    const lines = createInterface({ input: child.stdout });
    const timer = setTimeout(() => reject(new Error('mock-server did not say where it listens')), 20000);
    child.once('error', reject);
    child.once('exit', (code) => reject(new Error(`mock-server exited (${code}) before listening`)));
    lines.on('line', (line) => {
      const m = /^listening on (\S+)$/.exec(line);
      if (m) {
        clearTimeout(timer);
        resolve({ addr: m[1], url: `ws://${m[1]}/`, child, stop: (signal = 'SIGTERM') => stop(child, signal) });
      }
    });
  });
}

/** Stops a server process and waits for it to exit. */
function stop(child, signal) {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill(signal);
  });
}

/**
 * A TCP proxy on 127.0.0.1 to `target` ("host:port"). `cut()` resets every connection through
 * it (both sides see a reset: the client's connection is lost without a close); `stall()`
 * stops forwarding on every connection through it now while keeping their sockets open (a
 * dead network path); connections made later are forwarded.
 */
export async function startProxy(target) {
  const [host, port] = target.split(':');
  const pairs = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect(Number(port), host);
    const pair = { client, upstream, stalled: false };
    pairs.add(pair);
    const forward = (from, to) => from.on('data', (d) => { if (!pair.stalled) to.write(d); });
    forward(client, upstream);
    forward(upstream, client);
    const end = () => {
      pairs.delete(pair);
      client.destroy();
      upstream.destroy();
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port: own } = server.address();
  return {
    url: `ws://127.0.0.1:${own}/`,
    connections: () => pairs.size,
    cut() {
      for (const { client, upstream } of pairs) {
        client.resetAndDestroy();
        upstream.resetAndDestroy();
      }
      pairs.clear();
    },
    stall() {
      for (const pair of pairs) pair.stalled = true;
    },
    close() {
      this.cut();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

/** Resolves with the first value of `event` on `client` that `pred` accepts. */
export function next(client, event, pred = () => true, timeout = 10000) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      off();
      reject(new Error(`no ${event} within ${timeout} ms`));
    }, timeout);
    const off = client.on(event, (v) => {
      if (!pred(v)) return;
      clearTimeout(timer);
      off();
      resolve(v);
    });
  });
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

/** Resolves once `cond()` is true, checking every 10 ms; rejects after `timeout` ms. */
export async function waitFor(cond, what = 'the condition', timeout = 10000) {
  const deadline = Date.now() + timeout;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${timeout} ms`);
    await sleep(10);
  }
}

/** Connects `client` and resolves with its first session answer. */
export function connected(client, timeout = 10000) {
  const opened = next(client, 'session', () => true, timeout);
  client.connect();
  return opened;
}

/** A server and a proxy to it, both stopped when test `t` ends. */
export async function serverBehindProxy(t) {
  const server = await startServer();
  const proxy = await startProxy(server.addr);
  t.after(async () => {
    await proxy.close();
    await server.stop();
  });
  return { server, proxy };
}
