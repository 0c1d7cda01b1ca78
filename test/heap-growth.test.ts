// A swiftvol process's heap growth while its heap is small (src/cli/heap-growth.ts): the
// setting widens the growth of a small heap to about SMALL_HEAP_LIMIT and
// leaves a larger one to V8. (Its effect on serve, mark-compacts and CPU per
// cold MB, is measured by hand and by the bench's cold rows, not here.)
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { SMALL_HEAP_LIMIT, growingPercent } from '../src/cli/heap-growth.js';

const MiB = 1024 * 1024;

test('a small heap may grow to about the limit before it is marked; a larger one is left to V8', () => {
  for (const used of [4 * MiB, 12 * MiB, 20 * MiB, 31 * MiB]) {
    const percent = growingPercent(used);
    assert.ok(percent > 0 && percent % 50 === 0, `${percent} for ${used}`);
    const limit = used * (1 + percent / 100);
    assert.ok(limit <= SMALL_HEAP_LIMIT && limit > SMALL_HEAP_LIMIT - used * 0.5, `a heap of ${used} bytes grows to ${limit}`);
  }
  assert.equal(growingPercent(SMALL_HEAP_LIMIT / 2), 0);
  assert.equal(growingPercent(512 * MiB), 0);
  assert.equal(growingPercent(0), 0);
});
