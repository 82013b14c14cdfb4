// Runs the result-buffer pool's native test (native/tests/output_buffer_test.cpp):
// page-locked buffers from a registered allocator, recycled, capped, and
// ordinary memory where they cannot be had. Built next to the addon by the
// top-level CMake build (npm install / npm run build:native).
import { strict as assert } from 'assert';
import { runNativeTestBinary } from './support/native-test-binary';

const cases = ['pinned_without_allocator', 'pinned_from_allocator_and_recycled', 'spares_are_had_off_the_taking_thread',
  'pinned_from_64_kb', 'pageable_stays_pageable',
  'refusal_falls_back', 'cap_on_page_locked_bytes', 'shrink_keeps_the_prefix', 'absurd_size_is_e_oom'];

describe('result buffers (native test binary)', function () {
  this.timeout(60_000);

  it('recycles page-locked buffers within their cap and falls back to ordinary memory', function () {
    const output = runNativeTestBinary('fusedrt_output_buffer_test', 50_000);
    const lines = output.split('\n');
    for (const name of cases) assert.ok(lines.includes(`PASS ${name}`), `no pass for ${name}:\n${output}`);
    assert.match(output, new RegExp(`^OK: ${cases.length} cases, 0 failed$`, 'm'));
  });
});
