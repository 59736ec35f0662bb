// The client against a real kim server (mock-server --encoding default): login, send,
// receive, resume after a cut connection, a server restart, refusals, the outgoing queue's
// bound, a dead connection noticed by its silence.

import { test } from 'node:test';
import net from 'node:net';
import assert from 'node:assert/strict';
import { KimClient, QueueFullError } from '../src/index.js';
import {
  connected, next, serverBehindProxy, sleep, startProxy, startServer, waitFor,
} from './helpers.js';

const fast = { backoff: { initial: 50, max: 400 }, restartSpread: 200 };

function client(url, token, options = {}) {
  const c = new KimClient({ url, token, ...fast, ...options });
  c.received = [];
  c.on('message', (m) => c.received.push(m));
  return c;
}

test('login, send and receive, with numbers and acknowledgements', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  const alice = client(server.url, 'alice');
  const bob = client(server.url, 'bob');
  const started = await connected(alice);
  assert.equal(started.how, 'ok');
  assert.equal(started.resync, true);
  await connected(bob);
  // Echo: the message comes back numbered 1, and the server acknowledged the client's 1.
  const acks = [];
  alice.on('acked', (n) => acks.push(n));
  const n = alice.send('hello');
  assert.equal(n, 1);
  await waitFor(() => acks.length === 1 && alice.received.length === 1, 'the echo and its ack');
  assert.deepEqual(acks, [1]);
  assert.deepEqual(alice.received, [{ data: 'hello', seq: 1 }]);
  // A push from bob, and a binary echo.
  bob.send('@alice hi there');
  await waitFor(() => alice.received.length === 2, 'the push');
  assert.equal(alice.received[1].data, 'bob: hi there');
  alice.send(new Uint8Array([0, 1, 2, 255]));
  await waitFor(() => alice.received.length === 3, 'the binary echo');
  const bin = alice.received[2];
  assert.ok(bin.data instanceof Uint8Array);
  assert.deepEqual([...bin.data], [0, 1, 2, 255]);
  assert.deepEqual(alice.received.map((m) => m.seq), [1, 2, 3]);
  assert.equal(alice.state, 'open');
  alice.close();
  bob.close();
  assert.equal(alice.state, 'closed');
});

test('a connection cut mid-stream resumes: 1,000 pushes arrive exactly once, in order', async (t) => {
  const { server, proxy } = await serverBehindProxy(t);
  const alice = client(proxy.url, 'alice');
  const bob = client(server.url, 'bob', { maxQueued: 2000 });
  const sessions = [];
  let replayed = 0;
  alice.on('session', (s) => {
    sessions.push(s.how);
    replayed += s.replay;
  });
  await connected(alice);
  await connected(bob);
  const total = 1000;
  const cutAt = 200 + Math.floor(Math.random() * 600);
  let cut = false;
  alice.on('message', () => {
    if (!cut && alice.received.length >= cutAt) {
      cut = true;
      proxy.cut();
    }
  });
  // Paced (about 1,000 a second, as a busy chat would push), so that the cut lands mid-stream
  // with messages on their way.
  for (let i = 0; i < total; i += 1) {
    bob.send(`@alice m${i}`);
    if (i % 10 === 9) await sleep(10);
  }
  await waitFor(() => alice.received.length >= total && sessions.length === 2, 'every message, resumed', 30000);
  await sleep(200);
  assert.ok(cut, 'the connection was cut');
  t.diagnostic(`cut after ${cutAt} messages; ${replayed} replayed on the resume`);
  assert.deepEqual(sessions, ['ok', 'resumed'], 'one resume, exact');
  assert.equal(alice.received.length, total, `received ${alice.received.length}`);
  alice.received.forEach((m, i) => {
    assert.equal(m.data, `bob: m${i}`);
    assert.equal(m.seq, i + 1);
  });
  alice.close();
  bob.close();
});

test('messages sent across a cut reach the app once each', async (t) => {
  const { proxy } = await serverBehindProxy(t);
  const alice = client(proxy.url, 'alice');
  await connected(alice);
  // Cut while messages are in flight: those not acknowledged are resent after the resume,
  // and the server hands each number to the app once (the echo shows what the app got).
  const total = 300;
  for (let i = 0; i < total; i += 1) {
    alice.send(`u${i}`);
    if (i === 100) proxy.cut();
  }
  const deadline = Date.now() + 20000;
  while (alice.received.length < total && Date.now() < deadline) await sleep(20);
  await sleep(300);
  const echoed = alice.received.map((m) => m.data);
  assert.deepEqual(echoed, Array.from({ length: total }, (_, i) => `u${i}`));
  alice.close();
});

test('a restarted server (sessions lost) is told as a new session, once', async (t) => {
  let server = await startServer();
  const addr = server.addr;
  t.after(() => server.stop());
  const alice = client(server.url, 'alice');
  const sessions = [];
  alice.on('session', (s) => sessions.push(s));
  await connected(alice);
  alice.send('before');
  await waitFor(() => alice.received.length === 1, 'the echo');
  // Killed: no close frame, the client sees its connection lost and tries to resume.
  const lost = next(alice, 'lost');
  await server.stop('SIGKILL');
  await lost;
  await sleep(300);
  server = await startServer({ listen: addr });
  const renewed = await next(alice, 'session', () => true, 15000);
  assert.equal(renewed.how, 'new');
  assert.equal(renewed.resync, true);
  // Open and staying open: no loop of failed resumes.
  await sleep(1000);
  assert.equal(alice.state, 'open');
  assert.deepEqual(sessions.map((s) => s.how), ['ok', 'new']);
  // Numbering starts again from 1 in the new session.
  alice.send('after');
  await waitFor(() => alice.received.length === 2, 'the echo in the new session');
  assert.deepEqual(alice.received[1], { data: 'after', seq: 1 });
  alice.close();
});

test('a server going away (1001) sends its clients back with a fresh login', async (t) => {
  let server = await startServer();
  const addr = server.addr;
  t.after(() => server.stop());
  const alice = client(server.url, 'alice');
  const sessions = [];
  alice.on('session', (s) => sessions.push(s.how));
  await connected(alice);
  await server.stop('SIGTERM');
  server = await startServer({ listen: addr });
  await next(alice, 'session', () => true, 15000);
  assert.deepEqual(sessions, ['ok', 'ok'], 'a fresh session, not a resume of an ended one');
  alice.close();
});

test('a refused login is reported, not retried', async (t) => {
  const server = await startServer();
  t.after(() => server.stop());
  // The mock server refuses an empty user id with 1008.
  const nobody = client(server.url, '');
  let attempts = 0;
  nobody.on('connecting', () => { attempts += 1; });
  nobody.connect();
  const refused = await next(nobody, 'refused');
  assert.equal(refused.code, 1008);
  assert.match(refused.reason, /invalid user id/);
  await sleep(500);
  assert.equal(attempts, 1);
  assert.equal(nobody.state, 'closed');
  assert.throws(() => nobody.send('x'), /closed/);
});

test('the outgoing queue is bounded while disconnected, with a clear error', async () => {
  // Nothing listens on the proxy's target: the client keeps trying.
  const proxy = await startProxy('127.0.0.1:9');
  const alice = client(proxy.url, 'alice', { maxQueued: 10 });
  alice.connect();
  for (let i = 0; i < 10; i += 1) alice.send(`m${i}`);
  assert.throws(() => alice.send('one too many'), QueueFullError);
  alice.close();
  await proxy.close();
});

test('a silent connection is noticed by its missing pong and resumed', async (t) => {
  const { server, proxy } = await serverBehindProxy(t);
  const alice = client(proxy.url, 'alice', { pingInterval: 300, pongTimeout: 300 });
  const bob = client(server.url, 'bob');
  await connected(alice);
  await connected(bob);
  // Pings answered: an idle but healthy connection stays.
  await sleep(1000);
  assert.equal(alice.state, 'open');
  // The path goes dead without a reset: only the silence tells.
  proxy.stall();
  bob.send('@alice while you were away');
  const lost = await next(alice, 'lost', () => true, 5000);
  assert.match(lost.reason, /nothing heard/);
  const resumed = await next(alice, 'session', () => true, 5000);
  assert.equal(resumed.how, 'resumed');
  await waitFor(() => alice.received.some((m) => m.data === 'bob: while you were away'), 'the push');
  alice.close();
  bob.close();
});

test('a refused upgrade (an HTTP status) is retried with backoff, promptly', async () => {
  // A server that answers every upgrade with 401, as a gateway's hook refuses a bad token.
  const server = net.createServer((s) => {
    s.once('data', () => s.end('HTTP/1.1 401 Unauthorized\r\ncontent-length: 0\r\n\r\n'));
  });
  await new Promise((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address();
  const alice = client(`ws://127.0.0.1:${port}/`, 'alice', { backoff: { initial: 20, max: 40 } });
  let lost = 0;
  alice.on('lost', () => { lost += 1; });
  alice.connect();
  // Each attempt fails at once (not after the connect timeout) and the next follows its delay.
  await waitFor(() => lost >= 5, 'five failed attempts', 3000);
  assert.equal(alice.state, 'reconnecting');
  alice.close();
  await new Promise((r) => server.close(r));
});
