import { test } from 'node:test';
import assert from 'node:assert/strict';
import { Backoff } from '../src/index.js';

test('the window doubles from initial up to max', () => {
  const b = new Backoff({ initial: 100, max: 1000 });
  const windows = [];
  for (let i = 0; i < 7; i += 1) {
    windows.push(b.window());
    b.next();
  }
  assert.deepEqual(windows, [100, 200, 400, 800, 1000, 1000, 1000]);
  b.reset();
  assert.equal(b.window(), 100);
  // Far along, 2^attempt overflows to Infinity and max still caps it.
  b.attempt = 5000;
  assert.equal(b.window(), 1000);
});

test('delays are drawn over the whole window (full jitter)', () => {
  const draws = 20000;
  for (const attempt of [0, 2, 5]) {
    const b = new Backoff({ initial: 1000, max: 20000 });
    const window = Math.min(20000, 1000 * 2 ** attempt);
    const tenths = new Array(10).fill(0);
    let sum = 0;
    for (let i = 0; i < draws; i += 1) {
      b.attempt = attempt;
      const d = b.next();
      assert.ok(d >= 0 && d < window, `attempt ${attempt}: ${d} outside [0, ${window})`);
      sum += d;
      tenths[Math.floor((d / window) * 10)] += 1;
    }
    const mean = sum / draws;
    assert.ok(Math.abs(mean - window / 2) < window * 0.02, `attempt ${attempt}: mean ${mean}`);
    // Each tenth of the window gets about a tenth of the draws: spread, not clustered.
    for (const [i, n] of tenths.entries()) {
      assert.ok(n > draws * 0.085 && n < draws * 0.115, `attempt ${attempt}: tenth ${i} has ${n}`);
    }
  }
});

test('a server going away starts the window wide', () => {
  const b = new Backoff({ initial: 1000, max: 20000 });
  b.startAt(5000);
  assert.ok(b.window() >= 5000 && b.window() < 10000, `window ${b.window()}`);
  b.startAt(60000);
  assert.equal(b.window(), 20000, 'never past max');
});

test('nonsense bounds are refused', () => {
  assert.throws(() => new Backoff({ initial: 0 }), RangeError);
  assert.throws(() => new Backoff({ initial: 100, max: 10 }), RangeError);
});
