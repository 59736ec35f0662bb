// kim-client: PROTOCOL.md's default encoding over WebSocket, for browsers and Node 20+.
export { KimClient, QueueFullError, ClientClosedError } from './client.js';
export { Backoff } from './backoff.js';
export { readFrame, writeMessage, writeAck } from './protocol.js';
