// Compiled by `tsc --noEmit` in scripts/js-client: the declarations in src/index.d.ts hold for
// the client's documented use, under strict settings.
import { Backoff, KimClient, QueueFullError, readFrame, type ClientState } from '../src/index.js';

const client = new KimClient({
  url: 'ws://127.0.0.1:8000/',
  token: async () => 'alice',
  backoff: { initial: 500, max: 10000 },
  maxQueued: 10,
});
const off: () => void = client.on('message', ({ data, seq }) => {
  const text: string = typeof data === 'string' ? data : new TextDecoder().decode(data);
  console.log(seq.toFixed(0), text);
});
client.on('session', ({ how, resync, replay }) => {
  const h: 'ok' | 'resumed' | 'new' = how;
  console.log(h, resync ? 'resync' : 'exact', replay);
});
client.on('refused', ({ code, reason }) => console.log(code, reason));
client.on('closed', ({ byServer }) => console.log(byServer));
client.connect();
try {
  const n: number = client.send('hi');
  client.send(new Uint8Array([1, 2]), { numbered: false });
  console.log(n);
} catch (e) {
  if (e instanceof QueueFullError) console.log(e.limit);
}
const state: ClientState = client.state;
const frame = readFrame('#ack 3');
if (frame.kind === 'ack') console.log(frame.n + 1);
new Backoff({ initial: 100 }).next();
off();
client.close(1000, state);
