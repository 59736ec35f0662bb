// Reconnect delays: exponential growth with full jitter.
//
// Attempt `a` (0 for the first retry) waits a delay drawn uniformly from [0, window(a)], where
// window(a) = min(max, initial * 2^a). Drawing from the whole window (not a fixed delay with a
// little noise) is what spreads a thousand clients that lost their server in the same second
// over the whole window instead of sending them back together.

/** @typedef {{ initial?: number, max?: number, random?: () => number }} BackoffOptions */

export class Backoff {
  /** @param {BackoffOptions} [options] */
  constructor(options = {}) {
    const { initial = 1000, max = 20000, random = Math.random } = options;
    if (!(initial > 0) || !(max >= initial)) {
      throw new RangeError(`backoff needs 0 < initial <= max (got initial ${initial}, max ${max})`);
    }
    this.initial = initial;
    this.max = max;
    this.random = random;
    this.attempt = 0;
  }

  /** The window the next delay is drawn from, in milliseconds. */
  window() {
    // 2^a overflows to Infinity for large a, which min() caps.
    return Math.min(this.max, this.initial * 2 ** this.attempt);
  }

  /** The next delay in milliseconds; each call widens the window until it reaches `max`. */
  next() {
    const delay = Math.floor(this.random() * this.window());
    this.attempt += 1;
    return delay;
  }

  /**
   * Starts the next delays from a window of at least `spread` milliseconds (a server that went
   * away sends all its clients back at once: they need a wide window from the first try).
   * @param {number} spread
   */
  startAt(spread) {
    this.attempt = 0;
    while (this.window() < Math.min(spread, this.max)) this.attempt += 1;
  }

  /** A connection succeeded: the next loss starts from the smallest window again. */
  reset() {
    this.attempt = 0;
  }
}
