// Logs in to a kim gateway speaking PROTOCOL.md's default encoding (kim's mock-server with
// `--encoding default`, say), sends one message and prints what comes back, then closes.
//
//   cargo run -p kim-examples --bin mock-server -- --transport ws --encoding default
//   node --experimental-websocket clients/js/examples/echo.js ws://127.0.0.1:8000/ alice
import { KimClient } from '../src/index.js';

const [url = 'ws://127.0.0.1:8000/', user = 'alice'] = process.argv.slice(2);
const client = new KimClient({ url, token: user });
client.on('session', ({ how }) => {
  console.log(`session: ${how}`);
  client.send('hello from kim-client');
});
client.on('message', ({ data, seq }) => {
  console.log(`${seq}: ${data}`);
  client.close();
});
client.on('refused', ({ reason }) => console.log(`refused: ${reason}`));
client.on('reconnecting', ({ delay }) => console.log(`reconnecting in ${delay} ms`));
client.connect();
