/**
 * The example flows on a machine with a GPU, through the real Node-RED
 * runtime (run by tools/device/gpu-check.sh): an engine config node left at
 * device `auto` loads on CUDA and says so in the log, and every flow gives
 * the results it gives on the CPU; engine nodes on `cuda` and `cuda:0`
 * share one device; an engine that cannot get its GPU memory, or names a GPU
 * that is not there, fails the flow's messages with E_OOM or E_BACKEND (to
 * its Catch node), and a redeploy that fits works in the same process
 * (issue 3, "Runtime").
 */
import { strict as assert } from 'assert';
import { assertClose } from '../support/assert-close';
import { readExample, runExample, EXAMPLE_NODES, type Received } from '../support/examples';
import { helper } from '../support/red-helper';

/** What the runtime logged since the flow was loaded, as text. */
function logLines(): string[] {
  return helper.log().getCalls().map((call) => String(call.args[0]?.msg ?? ''));
}

/** Payloads in a fixed order (messages of one debug node may arrive in any order). */
function payloads(received: Received[]): unknown[] {
  return received.map((m) => m.payload).sort((a, b) => JSON.stringify(a).localeCompare(JSON.stringify(b)));
}

const EXAMPLES: Array<{ name: string; debug: string; messages: number }> = [
  { name: 'fill-mask', debug: 'fm-debug', messages: 2 },
  { name: 'classification', debug: 'cl-debug', messages: 3 },
  { name: 'embedding-similarity', debug: 'es-debug', messages: 1 },
];

describe('example flows on the GPU (GPU machine)', function () {
  this.timeout(600000);
  afterEach(() => helper.unload());

  for (const example of EXAMPLES) {
    it(`${example.name}: device auto loads on CUDA, and the results are the CPU's`, async () => {
      const onGpu = await runExample(example.name, { [example.debug]: example.messages });
      const loaded = logLines().filter((line) => line.startsWith('engine loaded'));
      assert.ok(loaded.length > 0 && loaded.every((line) => /device auto runs on cuda:\d+ \(/.test(line)), loaded.join('\n'));
      await helper.unload();
      const onCpu = await runExample(example.name, { [example.debug]: example.messages }, { device: 'cpu' });
      assert.ok(logLines().some((line) => /device cpu runs on the CPU/.test(line)));
      // fp32 plans: CUDA and the CPU agree to about 1e-6 on these models.
      assertClose(payloads(onGpu[example.debug]), payloads(onCpu[example.debug]), example.name, 1e-4);
    });
  }

  it('engine nodes on cuda and cuda:0 share one device', async () => {
    const engine = readExample('fill-mask').find((n) => n.type === 'fusedrt-engine')!;
    await helper.load(EXAMPLE_NODES, [
      { ...engine, id: 'e1', device: 'cuda' },
      { ...engine, id: 'e2', device: 'cuda:0' },
      { id: 'i1', type: 'fusedrt-infer', engine: 'e1', wires: [[]] },
      { id: 'i2', type: 'fusedrt-infer', engine: 'e2', wires: [[]] },
    ]);
    // Each engine loads in the background once a node registers with it.
    const deadline = Date.now() + 120000;
    while (logLines().filter((line) => line.startsWith('engine loaded')).length < 2 && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 100));
    }
    const loaded = logLines().filter((line) => line.startsWith('engine loaded'));
    assert.equal(loaded.length, 2, loaded.join('\n'));
    assert.ok(loaded.every((line) => /runs on cuda:0 \(/.test(line)), loaded.join('\n'));
    assert.ok(loaded.some((line) => /used by 2 engine\(s\)/.test(line)), loaded.join('\n'));
  });

  it('CUDA failures at load reach the flow with their codes; a redeploy that fits works', async () => {
    // 2^24 tokens of the demo model's workspace is far more than any GPU holds.
    const failures = { 'fm-error-debug': 2 };
    for (const [fields, code] of [[{ device: 'cuda', maxTokens: String(2 ** 24) }, 'E_OOM'], [{ device: 'cuda:99' }, 'E_BACKEND']] as const) {
      const failed = await runExample('fill-mask', failures, fields);
      for (const message of failed['fm-error-debug']) {
        assert.equal((message as { error?: { code?: string } }).error?.code, code, JSON.stringify(message));
      }
      await helper.unload();
    }
    const fits = await runExample('fill-mask', { 'fm-debug': 2 }, { device: 'cuda' });
    assert.equal(fits['fm-debug'].length, 2);
  });
});
