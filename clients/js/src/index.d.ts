// Type declarations of kim-client.

/** Reconnect delays: a delay drawn uniformly from [0, min(max, initial * 2^attempt)] ms. */
export interface BackoffOptions {
  /** The first window, in milliseconds. Default 1000. */
  initial?: number;
  /** The largest window, in milliseconds. Default 20000 (well inside a 120 s session window). */
  max?: number;
  /** The source of randomness, [0, 1). Default Math.random. */
  random?: () => number;
}

export interface KimClientOptions {
  /** The gateway's websocket URL, `ws://` or `wss://`. */
  url: string;
  /**
   * The app's credential, put in the URL's query as `tokenParam`: a string, or a function
   * called before every connection attempt (a fresh token on each reconnect).
   */
  token?: string | (() => string | Promise<string>);
  /** The query parameter the token goes in. Default 'token'. */
  tokenParam?: string;
  /** More query parameters of the app's. */
  params?: Record<string, string | number>;
  /** Keep a session (PROTOCOL.md): numbered delivery, acknowledgements, resume. Default true. */
  session?: boolean;
  /** The WebSocket implementation. Default globalThis.WebSocket. */
  WebSocket?: new (url: string) => WebSocket;
  /** Reconnect delays. */
  backoff?: BackoffOptions;
  /**
   * After the server went away as a whole (close 1001 or 1012), the first delay is drawn
   * from a window of at least this many ms, so that its clients come back spread. Default 5000.
   */
  restartSpread?: number;
  /** Time allowed from connecting to the session's answer, ms. Default 10000. */
  connectTimeout?: number;
  /** Silence after which the client pings (`#ping`), ms. Default 25000. */
  pingInterval?: number;
  /** Silence after a ping after which the connection is given up and resumed, ms. Default 10000. */
  pongTimeout?: number;
  /** Acknowledge every this many messages. Default 32. */
  ackEvery?: number;
  /** ... and this many ms after the first one not acknowledged. Default 1000. */
  ackAfter?: number;
  /** Messages waiting to be sent or acknowledged at most; `send` past it throws. Default 1000. */
  maxQueued?: number;
}

export type ClientState = 'idle' | 'connecting' | 'open' | 'reconnecting' | 'closed';

export interface ClientEvents {
  /** The state changed. */
  state: { state: ClientState; code?: number; reason?: string; byServer?: boolean };
  /** A connection attempt begins (the URL with its credentials elided). */
  connecting: { url: string };
  /**
   * The server answered the login: 'ok' (a session began), 'resumed' (`replay` held messages
   * follow, exactly the missed ones), 'new' (a resume could not be done: the app resyncs).
   */
  session: { how: 'ok' | 'resumed' | 'new'; replay: number; resync: boolean };
  /** A message, with its number in the session (0 without a session). */
  message: { data: string | Uint8Array; seq: number };
  /** An unnumbered frame that is not the session's: the app's login reply, say. */
  reply: { data: string | Uint8Array };
  /** The server's listener took the client's messages up to this number. */
  acked: number;
  /** The connection was lost (or given up on); the client resumes. */
  lost: { code?: number; reason?: string };
  /** The next attempt waits `delay` ms. */
  reconnecting: { delay: number; attempt: number };
  /** The login was refused (close 1008 with the app's reason, say); the client stopped. */
  refused: { code: number; reason: string };
  /** The client stopped: `close()` was called, or the server closed for good. */
  closed: { code: number; reason: string; byServer: boolean };
  /** Something went wrong that the client rides out (a token hook that threw, say). */
  error: unknown;
}

export declare class KimClient {
  constructor(options: KimClientOptions);
  readonly state: ClientState;
  /** The number of the last message received in this session (0 for none). */
  readonly lastSeq: number;
  /** Listens to an event; returns a function that stops listening. */
  on<E extends keyof ClientEvents>(event: E, fn: (value: ClientEvents[E]) => void): () => void;
  /** Connects, and from then on reconnects by itself until `close`. */
  connect(): void;
  /**
   * Sends now or as soon as connected; in a session numbered (unless `numbered: false`),
   * kept until acknowledged and resent after a resume. Returns the number (0: unnumbered).
   * @throws QueueFullError when `maxQueued` messages wait already.
   */
  send(data: string | Uint8Array | ArrayBuffer, options?: { numbered?: boolean }): number;
  /** Acknowledges what arrived, closes cleanly (ending the session), stops reconnecting. */
  close(code?: number, reason?: string): void;
}

export declare class QueueFullError extends Error {
  readonly limit: number;
}

export declare class ClientClosedError extends Error {}

export declare class Backoff {
  constructor(options?: BackoffOptions);
  attempt: number;
  /** The window the next delay is drawn from, ms. */
  window(): number;
  /** The next delay, ms; widens the window. */
  next(): number;
  /** Starts from a window of at least `spread` ms. */
  startAt(spread: number): void;
  /** Back to the smallest window. */
  reset(): void;
}

export type ServerFrame =
  | { kind: 'opened'; how: 'ok' | 'resumed' | 'new'; token: string; replay: number }
  | { kind: 'ack'; n: number }
  | { kind: 'pong' }
  | { kind: 'message'; seq: number; data: string | Uint8Array }
  | { kind: 'other'; data: string | Uint8Array };

/** Reads a frame the server sent in a session. */
export declare function readFrame(data: string | ArrayBuffer | ArrayBufferView): ServerFrame;
/** `<n> <payload>`: a message of the client's in a session (n 0: unnumbered). */
export declare function writeMessage(n: number, payload: string | Uint8Array): string | Uint8Array;
/** `#ack <seq>`. */
export declare function writeAck(seq: number): string;
