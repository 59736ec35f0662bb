// The client: one logical connection to a kim gateway that survives lost sockets.
//
// A KimClient owns at most one WebSocket at a time. Every socket it opens gets a generation
// number; events of an older socket are ignored, so a socket given up on (a dead connection,
// a numbering fault) can never deliver into the next one.

import { Backoff } from './backoff.js';
import { PING, readFrame, writeAck, writeMessage } from './protocol.js';

/** `send` was called with the queue of unconfirmed and unsent messages full. */
export class QueueFullError extends Error {
  /** @param {number} limit */
  constructor(limit) {
    super(`kim-client: ${limit} messages are waiting to be sent or acknowledged (maxQueued)`);
    this.name = 'QueueFullError';
    this.limit = limit;
  }
}

/** `send` or `connect` was called after `close`. */
export class ClientClosedError extends Error {
  constructor() {
    super('kim-client: the client was closed');
    this.name = 'ClientClosedError';
  }
}

/** Close codes after which the server wants its clients back (a fresh login). */
const COME_BACK = new Set([1001, 1011, 1012, 1013]);
/** Of those, the server going away as a whole: every client comes back at once. */
const ALL_AT_ONCE = new Set([1001, 1012]);
/** Codes a socket reports when it ended without a close frame: the connection was lost. */
const LOST = new Set([1005, 1006]);
/** The code this client closes a socket with when it gives up on it (the session lives on). */
const GIVE_UP = 4000;

const DEFAULTS = {
  tokenParam: 'token',
  params: {},
  session: true,
  backoff: { initial: 1000, max: 20000 },
  restartSpread: 5000,
  connectTimeout: 10000,
  pingInterval: 25000,
  pongTimeout: 10000,
  ackEvery: 32,
  ackAfter: 1000,
  maxQueued: 1000,
};

export class KimClient {
  /** @param {import('./index.js').KimClientOptions} options */
  constructor(options) {
    if (!options || !options.url) throw new TypeError('kim-client: options.url is required');
    this.options = { ...DEFAULTS, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.WebSocket !== 'function') {
      throw new TypeError(
        'kim-client: no WebSocket here: pass options.WebSocket, or run Node 20 with --experimental-websocket',
      );
    }
    this.backoff = new Backoff({ ...DEFAULTS.backoff, ...options.backoff });
    /** @type {Map<string, Set<Function>>} */
    this.listeners = new Map();
    this._state = 'idle';
    this.ws = null;
    this.generation = 0;
    this.timers = { retry: null, connect: null, keepalive: null, ack: null };
    // The session: its token (null: the next login begins one), the last number received,
    // the last one acknowledged, and whether this socket has had its answer.
    this.sessionToken = null;
    this.last = 0;
    this.acked = 0;
    this.opened = false;
    this.lastReceived = 0;
    // Outgoing messages in order: numbered ones stay until the server acknowledges them,
    // unnumbered ones until they are written to an open socket.
    /** @type {{ n: number, payload: string | Uint8Array, sent: boolean }[]} */
    this.outbox = [];
    this.nextNumber = 1;
  }

  /** 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed' */
  get state() {
    return this._state;
  }

  /** The number of the last message received in this session (0 for none). */
  get lastSeq() {
    return this.last;
  }

  /**
   * Listens to an event; returns a function that stops listening.
   * @param {string} event
   * @param {Function} fn
   */
  on(event, fn) {
    if (!this.listeners.has(event)) this.listeners.set(event, new Set());
    this.listeners.get(event).add(fn);
    return () => this.listeners.get(event)?.delete(fn);
  }

  emit(event, value) {
    for (const fn of this.listeners.get(event) ?? []) {
      try {
        fn(value);
      } catch (e) {
        // A listener's failure is the app's: it must not break the connection.
        if (event !== 'error') this.emit('error', e);
      }
    }
  }

  setState(state, info) {
    if (this._state === state) return;
    this._state = state;
    this.emit('state', { state, ...info });
  }

  /** Connects (and from then on reconnects by itself until `close`). */
  connect() {
    if (this._state === 'closed') throw new ClientClosedError();
    if (this._state !== 'idle') return;
    this.open();
  }

  /**
   * Sends a message: now if connected, else as soon as the client is. In a session a message
   * is numbered (unless `numbered: false`) and kept until the server acknowledges it, and
   * resent after a resume; the server hands it to the app once. Returns its number (0 for an
   * unnumbered one).
   * @param {string | Uint8Array | ArrayBuffer} data
   * @param {{ numbered?: boolean }} [options]
   */
  send(data, options = {}) {
    if (this._state === 'closed') throw new ClientClosedError();
    if (this.outbox.length >= this.options.maxQueued) throw new QueueFullError(this.options.maxQueued);
    const payload = data instanceof ArrayBuffer ? new Uint8Array(data) : data;
    const numbered = this.options.session && options.numbered !== false;
    const entry = { n: numbered ? this.nextNumber++ : 0, payload, sent: false };
    this.outbox.push(entry);
    if (this.isOpen()) this.flush();
    return entry.n;
  }

  /**
   * Closes for good: acknowledges what arrived, closes the socket cleanly (which ends the
   * session on the server) and stops reconnecting.
   * @param {number} [code]
   * @param {string} [reason]
   */
  close(code = 1000, reason = '') {
    if (this._state === 'closed') return;
    const ws = this.ws;
    if (ws && this.isOpen() && this.options.session && this.last > this.acked) {
      ws.send(writeAck(this.last));
    }
    this.stop();
    this.setState('closed', { code, reason, byServer: false });
    if (ws) {
      try {
        ws.close(code, reason);
      } catch {
        ws.close();
      }
    }
    this.emit('closed', { code, reason, byServer: false });
  }

  isOpen() {
    return this._state === 'open' && this.ws !== null;
  }

  stop() {
    for (const key of Object.keys(this.timers)) {
      clearTimeout(this.timers[key]);
      this.timers[key] = null;
    }
    this.generation += 1;
    this.ws = null;
  }

  async url() {
    const { token, tokenParam, params, session } = this.options;
    const url = new URL(this.options.url);
    for (const [k, v] of Object.entries(params)) url.searchParams.set(k, String(v));
    if (token !== undefined) {
      const value = typeof token === 'function' ? await token() : token;
      url.searchParams.set(tokenParam, value);
    }
    if (session) {
      if (this.sessionToken) {
        url.searchParams.set('resume', this.sessionToken);
        url.searchParams.set('last', String(this.last));
      } else {
        url.searchParams.set('session', '1');
      }
    }
    return url.toString();
  }

  async open() {
    const generation = ++this.generation;
    this.setState(this._state === 'idle' ? 'connecting' : 'reconnecting');
    let url;
    try {
      url = await this.url();
    } catch (e) {
      if (generation !== this.generation) return;
      this.emit('error', e);
      return this.retry();
    }
    if (generation !== this.generation) return;
    this.emit('connecting', { url: url.replace(/([?&](?:resume|token)=)[^&]*/g, '$1...') });
    let ws;
    try {
      ws = new this.WebSocket(url);
    } catch (e) {
      this.emit('error', e);
      return this.retry();
    }
    ws.binaryType = 'arraybuffer';
    this.ws = ws;
    this.opened = false;
    this.timers.connect = setTimeout(() => {
      if (generation === this.generation) this.giveUp('connecting timed out');
    }, this.options.connectTimeout);
    ws.onopen = () => {
      if (generation !== this.generation) return;
      this.lastReceived = Date.now();
      if (!this.options.session) this.established();
    };
    ws.onmessage = (ev) => {
      if (generation === this.generation) this.receive(ev.data);
    };
    ws.onclose = (ev) => {
      if (generation === this.generation) this.closed(ev.code, ev.reason);
    };
    ws.onerror = () => {
      // Before the socket opened, a failed connection or a refused upgrade (an HTTP status
      // instead of 101, which the WebSocket API does not show). Browsers follow with a close
      // event, Node 20's WebSocket may not: it is handled here, and the close, if it comes,
      // belongs to a past generation. After opening, the close event follows.
      if (generation === this.generation && ws.readyState !== 1) this.closed(1006, 'connection failed');
    };
  }

  /** The socket is usable: the session's answer came (or there is no session). */
  established() {
    clearTimeout(this.timers.connect);
    this.timers.connect = null;
    this.opened = true;
    this.backoff.reset();
    this.setState('open');
    this.keepalive();
    this.flush();
  }

  receive(data) {
    this.lastReceived = Date.now();
    if (!this.options.session) {
      this.emit('message', { data: typeof data === 'string' ? data : new Uint8Array(data), seq: 0 });
      return;
    }
    const frame = readFrame(data);
    if (!this.opened) {
      if (frame.kind !== 'opened') {
        this.emit('error', new Error('kim-client: the login was not answered with a session (#ok, #resumed or #new)'));
        return this.giveUp('no session answer');
      }
      return this.sessionOpened(frame);
    }
    switch (frame.kind) {
      case 'message':
        if (frame.seq !== this.last + 1) {
          return this.giveUp(`message ${frame.seq} after ${this.last}`);
        }
        this.last = frame.seq;
        this.emit('message', { data: frame.data, seq: frame.seq });
        this.scheduleAck();
        return;
      case 'ack': {
        let i = 0;
        while (i < this.outbox.length && this.outbox[i].sent && this.outbox[i].n <= frame.n) i += 1;
        if (i > 0) this.outbox.splice(0, i);
        this.emit('acked', frame.n);
        return;
      }
      case 'pong':
        return;
      case 'opened':
      case 'other':
        this.emit('reply', { data: frame.data ?? frame.token });
        return;
      default:
    }
  }

  sessionOpened(frame) {
    const resumed = frame.how === 'resumed';
    this.sessionToken = frame.token;
    if (!resumed) {
      // A new session: nothing the old one held will come, and the server has taken none of
      // this client's numbers.
      this.last = 0;
      this.acked = 0;
      this.nextNumber = 1;
      for (const entry of this.outbox) if (entry.n > 0) entry.n = this.nextNumber++;
    }
    // Every message not acknowledged is (re)sent on the new socket, in order.
    for (const entry of this.outbox) entry.sent = false;
    this.emit('session', {
      how: frame.how,
      replay: frame.replay,
      // The app resyncs from its own store unless the session was resumed exactly.
      resync: !resumed,
    });
    this.established();
  }

  flush() {
    const ws = this.ws;
    let i = 0;
    while (i < this.outbox.length) {
      const entry = this.outbox[i];
      if (!entry.sent) {
        ws.send(this.options.session ? writeMessage(entry.n, entry.payload) : entry.payload);
        entry.sent = true;
      }
      if (entry.n === 0) this.outbox.splice(i, 1);
      else i += 1;
    }
  }

  scheduleAck() {
    if (this.last - this.acked >= this.options.ackEvery) return this.sendAck();
    if (!this.timers.ack) this.timers.ack = setTimeout(() => this.sendAck(), this.options.ackAfter);
  }

  sendAck() {
    clearTimeout(this.timers.ack);
    this.timers.ack = null;
    if (this.isOpen() && this.last > this.acked) {
      this.ws.send(writeAck(this.last));
      this.acked = this.last;
    }
  }

  /** Pings after `pingInterval` of silence; gives the socket up if `pongTimeout` passes too. */
  keepalive() {
    clearTimeout(this.timers.keepalive);
    const { pingInterval, pongTimeout } = this.options;
    const quiet = Date.now() - this.lastReceived;
    if (quiet < pingInterval) {
      this.timers.keepalive = setTimeout(() => this.keepalive(), pingInterval - quiet);
      return;
    }
    if (!this.isOpen()) return;
    if (this.options.session) this.ws.send(PING);
    const pinged = Date.now();
    this.timers.keepalive = setTimeout(() => {
      if (this.lastReceived >= pinged) this.keepalive();
      else this.giveUp(`nothing heard for ${Date.now() - this.lastReceived} ms`);
    }, pongTimeout);
  }

  /** Drops the current socket without ending the session, and reconnects. */
  giveUp(why) {
    const ws = this.ws;
    this.stop();
    if (ws) {
      try {
        ws.close(GIVE_UP, why.slice(0, 120));
      } catch {
        // Already closing.
      }
    }
    this.emit('lost', { reason: why });
    this.retry();
  }

  closed(code, reason) {
    this.stop();
    if (LOST.has(code)) {
      // The connection was lost: the session waits on the server; resume it.
      this.emit('lost', { code, reason });
      return this.retry();
    }
    if (!this.opened && !COME_BACK.has(code)) {
      // The login was refused (1008 with the app's reason, say): trying again would be
      // refused again.
      this.setState('closed', { code, reason, byServer: true });
      this.emit('refused', { code, reason });
      return;
    }
    if (COME_BACK.has(code)) {
      // The server ended the session and wants its clients back: a fresh login.
      this.sessionToken = null;
      if (ALL_AT_ONCE.has(code)) this.backoff.startAt(this.options.restartSpread);
      return this.retry();
    }
    // The server closed for good (the app's close, a newer login, a protocol error).
    this.setState('closed', { code, reason, byServer: true });
    this.emit('closed', { code, reason, byServer: true });
  }

  retry() {
    if (this._state === 'closed') return;
    const delay = this.backoff.next();
    this.setState('reconnecting');
    this.emit('reconnecting', { delay, attempt: this.backoff.attempt });
    this.timers.retry = setTimeout(() => {
      this.timers.retry = null;
      this.open();
    }, delay);
  }
}
