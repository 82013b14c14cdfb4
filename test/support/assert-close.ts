/** Deep equality of JSON-like payloads where numbers may differ by rounding. */
import * as assert from 'assert';

/**
 * Equal structure and strings; numbers within `tolerance` × max(1, |expected|)
 * (1e-5 by default: float32 rounding, e.g. a GEMM over more rows when the
 * engine batches requests together).
 */
export function assertClose(actual: unknown, expected: unknown, where = 'payload', tolerance = 1e-5): void {
  if (typeof expected === 'number') {
    assert.strictEqual(typeof actual, 'number', where);
    assert.ok(Math.abs((actual as number) - expected) <= tolerance * Math.max(1, Math.abs(expected)), `${where}: ${actual} vs ${expected}`);
  } else if (Array.isArray(expected)) {
    assert.ok(Array.isArray(actual) && actual.length === expected.length, `${where}: length`);
    expected.forEach((e, i) => assertClose((actual as unknown[])[i], e, `${where}[${i}]`, tolerance));
  } else if (typeof expected === 'object' && expected !== null) {
    assert.deepStrictEqual(Object.keys(actual as object).sort(), Object.keys(expected).sort(), where);
    for (const [k, e] of Object.entries(expected)) assertClose((actual as Record<string, unknown>)[k], e, `${where}.${k}`, tolerance);
  } else {
    assert.strictEqual(actual, expected, where);
  }
}
