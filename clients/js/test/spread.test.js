// 1,000 clients whose server restarts come back spread over the backoff window, not together.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { KimClient } from '../src/index.js';
import { next, sleep, startServer } from './helpers.js';

test('1,000 clients reconnecting after a restart spread their attempts', { timeout: 120000 }, async (t) => {
  let server = await startServer();
  const addr = server.addr;
  t.after(() => server.stop());
  const clients = [];
  const opened = [];
  for (let i = 0; i < 1000; i += 1) {
    // The defaults: the spread is theirs.
    const c = new KimClient({ url: server.url, token: `u${i}` });
    opened.push(next(c, 'session', () => true, 60000));
    c.connect();
    clients.push(c);
  }
  await Promise.all(opened);
  // Every attempt after the restart, by time.
  const attempts = [];
  for (const c of clients) c.on('connecting', () => attempts.push(Date.now()));
  const back = clients.map((c) => next(c, 'session', () => true, 60000));
  const restarted = Date.now();
  // A graceful restart: every client is told 1001 and comes back with a fresh login.
  await server.stop('SIGTERM');
  server = await startServer({ listen: addr });
  const sessions = await Promise.all(back);
  assert.ok(sessions.every((s) => s.how === 'ok'));
  assert.ok(attempts.length >= 1000, `${attempts.length} attempts`);
  const buckets = new Map();
  for (const at of attempts) {
    const b = Math.floor((at - restarted) / 100);
    buckets.set(b, (buckets.get(b) ?? 0) + 1);
  }
  const busiest = Math.max(...buckets.values());
  const span = (Math.max(...attempts) - restarted) / 1000;
  t.diagnostic(`${attempts.length} attempts over ${span.toFixed(1)} s; busiest 100 ms: ${busiest} (${((100 * busiest) / attempts.length).toFixed(1)}%)`);
  assert.ok(busiest <= attempts.length * 0.05, `${busiest} of ${attempts.length} attempts in one 100 ms`);
  for (const c of clients) c.close();
  await sleep(100);
});
