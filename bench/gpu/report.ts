/**
 * The combined table of the GPU benchmark: FusedRT (fusedrt.json) against
 * PyTorch (torch.json) on the cases of inputs.json, with the FLOP floor at
 * the measured dense FP16 GEMM rate. Either side may be missing or partial
 * (a failed step); its columns then say so.
 *
 *   node dist/bench/gpu/report.js --dir OUT [--dir OUT2 ...] [--out FILE]
 *
 * Reads each OUT's {inputs,torch,fusedrt}.json; the results of several
 * directories (one device call per sequence length: gpu-bench.sh with
 * BENCH_SEQ) are joined into one table. Writes FILE (default: the first
 * OUT's report.md) and prints it.
 */
import * as fs from 'fs';
import * as path from 'path';
import { bertMlmFlops, effectiveTflops, floorMs } from './flops';
import type { BenchInputs, FusedResults } from './fusedrt-bench';

interface TorchResults {
  device: string;
  torch: string;
  transformers: string;
  gemm: { tflops: number; n: number };
  timings: Array<{ mode: string; case: string; median_ms?: number; runs?: number; error?: string; graph_mask?: string }>;
  notes: string[];
}

const TORCH_MODES = ['fp16-eager', 'fp16-sdpa', 'fp16-sdpa-graph', 'fp32-eager', 'fp32-sdpa'];

function readJson<T>(file: string): T | undefined {
  try {
    return JSON.parse(fs.readFileSync(file, 'utf8')) as T;
  } catch {
    return undefined;
  }
}

/** The results of several runs of the benchmark as one: cases from the first inputs.json, timings and checks of all. */
function joined(dirs: string[]): { inputs?: BenchInputs; torch?: TorchResults; ours?: FusedResults; sources: string[] } {
  const inputs = dirs.map((d) => readJson<BenchInputs>(path.join(d, 'inputs.json'))).find((i) => i !== undefined);
  const torchParts = dirs.map((d) => readJson<TorchResults>(path.join(d, 'torch.json'))).filter((t) => t !== undefined);
  const ourParts = dirs.map((d) => readJson<FusedResults>(path.join(d, 'fusedrt.json'))).filter((o) => o !== undefined);
  const torch = torchParts.length === 0 ? undefined : {
    ...torchParts[0],
    timings: torchParts.flatMap((t) => t.timings),
    notes: torchParts.flatMap((t) => t.notes),
  };
  const ours = ourParts.length === 0 ? undefined : {
    ...ourParts[0],
    timings: ourParts.flatMap((o) => o.timings),
    references: ourParts.flatMap((o) => o.references),
    top1: ourParts.flatMap((o) => o.top1 ?? []),
    loop: ourParts.flatMap((o) => o.loop),
    notes: [...new Set(ourParts.flatMap((o) => o.notes))],
  };
  // Several calls may land on several hosts: say what each measured on.
  const sources = torchParts.length > 1
    ? torchParts.map((t, i) => `part ${i + 1}: ${t.device}, dense FP16 GEMM ${t.gemm.tflops.toFixed(0)} TFLOP/s`)
    : [];
  return { inputs, torch, ours, sources };
}

function cell(ms: number | undefined, runs: number | undefined): string {
  if (ms === undefined) return '—';
  return `${ms.toFixed(2)}${runs !== undefined && runs < 100 ? ` (${runs})` : ''}`;
}

export function report(dirs: string[]): string {
  const { inputs, torch, ours, sources } = joined(dirs);
  if (!inputs) return `no inputs.json in ${dirs.join(', ')}: the PyTorch step did not get far enough to write the inputs\n`;
  const gemm = torch?.gemm.tflops;
  const lines: string[] = [];
  const m = inputs.model;
  lines.push(`## BERT MLM (${m.num_hidden_layers} layers × ${m.hidden_size}, intermediate ${m.intermediate_size}, vocab ${m.vocab_size}), one [MASK] row per sequence`);
  lines.push('');
  lines.push(`${torch ? `${torch.device}; torch ${torch.torch}, transformers ${torch.transformers}` : 'no PyTorch results'}; `
    + `${ours ? `FusedRT on Node ${ours.node}` : 'no FusedRT results'}. `
    + `Dense FP16 GEMM (torch.matmul 8192³): ${gemm ? `${gemm.toFixed(0)} TFLOP/s` : 'not measured'}.`
    + (sources.length > 0 ? ` Joined from ${sources.length} calls (${sources.join('; ')}).` : ''));
  lines.push('Milliseconds, median (run count in brackets when under 100). FusedRT: wall time of `await engine.run()` in Node, '
    + 'host work and logits download included. PyTorch: CUDA events around the forward (GPU stream time, no download); '
    + 'variable lengths padded to S with an attention mask, fixed lengths with an all-ones mask.');
  lines.push('');
  const ourMs = (precision: string, name: string) => ours?.timings.find((t) => t.precision === precision && t.case === name);
  const torchMs = (mode: string, name: string) => torch?.timings.find((t) => t.mode === mode && t.case === name);
  lines.push('| case | tokens | GFLOP | floor ms | ours fp16 | ours fp8 | ours fp32 | ' + TORCH_MODES.join(' | ')
    + ' | fp16 speed-up vs best torch fp16 | ours fp16 TFLOP/s |');
  lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: | ' + TORCH_MODES.map(() => '---:').join(' | ') + ' | ---: | ---: |');
  for (const c of inputs.cases) {
    if (!ourMs('fp16', c.name) && !ourMs('fp8', c.name) && !torchMs('fp16-eager', c.name)) continue;  // not in the runs joined
    const tokens = c.lengths.reduce((a, b) => a + b, 0);
    const flops = bertMlmFlops(inputs.model, c.lengths, c.batch);
    const fp16 = ourMs('fp16', c.name);
    const fp8 = ourMs('fp8', c.name);
    const fp32 = ourMs('fp32', c.name);
    const torchCells = TORCH_MODES.map((m) => torchMs(m, c.name));
    const bestTorch16 = Math.min(...torchCells.slice(0, 3).map((t) => t?.median_ms ?? Infinity));
    const speedup = fp16?.median_ms && Number.isFinite(bestTorch16) ? `${(bestTorch16 / fp16.median_ms).toFixed(2)}×` : '—';
    lines.push(`| ${c.name} | ${tokens} | ${(flops / 1e9).toFixed(1)} | ${gemm ? floorMs(flops, gemm).toFixed(3) : '—'} | `
      + `${cell(fp16?.median_ms, fp16?.runs)} | ${cell(fp8?.median_ms, fp8?.runs)} | ${cell(fp32?.median_ms, fp32?.runs)} | `
      + torchCells.map((t) => (t?.error ? 'failed' : cell(t?.median_ms, t?.runs))).join(' | ')
      + ` | ${speedup} | ${fp16?.median_ms ? effectiveTflops(flops, fp16.median_ms).toFixed(1) : '—'} |`);
  }
  if (ours) {
    const ms = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(3));
    const us = (v: number | undefined) => (v === undefined ? '—' : v.toFixed(0));
    lines.push('');
    lines.push('FusedRT fp16, wall time of engine.run against its GPU time (CUDA events), full logits and topK 5 on the device (medians):');
    lines.push('| case | wall ms | GPU ms | wall - GPU µs | topK 5 wall ms | topK 5 GPU ms | topK 5 wall - GPU µs |');
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const c of inputs.cases) {
      const t = ourMs('fp16', c.name);
      if (!t || t.error) continue;
      lines.push(`| ${c.name} | ${ms(t.median_ms)} | ${ms(t.gpu_median_ms)} | ${us(t.overhead_median_us)} | `
        + `${ms(t.topk5?.median_ms)} | ${ms(t.topk5?.gpu_median_ms)} | ${us(t.topk5?.overhead_median_us)} |`);
    }
    const hostRows: string[] = [];
    for (const c of inputs.cases) {
      const t = ourMs('fp16', c.name);
      if (!t || t.error) continue;
      for (const [outputs, run] of [['full logits', t], ['top-5', t.topk5]] as const) {
        const h = run?.host_median_us;
        if (run?.overhead_median_us === undefined || h === undefined) continue;
        hostRows.push(`| ${c.name} | ${outputs} | ${us(run.overhead_median_us)} | ${us(h.js_thread)} | ${us(h.launch)} | `
          + `${us(h.deliver)} | ${us(run.overhead_median_us - h.js_thread - h.deliver)} |`);
      }
    }
    if (hostRows.length > 0) {
      lines.push('');
      lines.push('Where wall - GPU goes (medians of the runs\' timing, µs): the addon on the JS thread (of it the launch), '
        + 'the delivery (spin wait\'s poll), and the rest (JS around engine.run, the promise, the event loop, the '
        + 'device starting the work):');
      lines.push('| case | outputs | wall - GPU | addon on the JS thread | launch | delivery | rest |');
      lines.push('| --- | --- | ---: | ---: | ---: | ---: | ---: |');
      lines.push(...hostRows);
    }
    lines.push('');
    lines.push('FusedRT, variable lengths against every sequence at S (FusedRT has no padding: "padded" = all at length S):');
    lines.push('');
    lines.push('| precision | S | batch | varlen ms | all-S ms | time ratio | token ratio |');
    lines.push('| --- | ---: | ---: | ---: | ---: | ---: | ---: |');
    for (const precision of ['fp16', 'fp8', 'fp32']) {
      for (const c of inputs.cases.filter((x) => x.kind === 'varlen')) {
        const fixedName = c.name.replace('varlen', 'fixed');
        const v = ourMs(precision, c.name)?.median_ms;
        const f = ourMs(precision, fixedName)?.median_ms;
        const fixedCase = inputs.cases.find((x) => x.name === fixedName);
        const tokenRatio = fixedCase ? c.lengths.reduce((a, b) => a + b, 0) / fixedCase.lengths.reduce((a, b) => a + b, 0) : NaN;
        if (v === undefined || f === undefined) continue;
        lines.push(`| ${precision} | ${c.seq} | ${c.batch} | ${v.toFixed(2)} | ${f.toFixed(2)} | ${(v / f).toFixed(2)} | ${tokenRatio.toFixed(2)} |`);
      }
    }
    lines.push('');
    lines.push('| check | result |');
    lines.push('| --- | --- |');
    for (const r of ours.references) {
      const margins = r.top1_margins?.length ? ` (the others' reference margins: ${r.top1_margins.map((m) => m.toExponential(1)).join(', ')})` : '';
      const rows = r.rows === undefined ? '' : `; top-1 same on ${r.top1_same}/${r.rows} rows${margins}; lowest row cosine ${r.min_cosine!.toFixed(7)}`;
      lines.push(`| ${r.precision} logits vs transformers fp32, ${r.case} | ${r.error ?? `max abs ${r.max_abs.toExponential(2)} (max logit ${r.max_ref.toFixed(2)})${rows}`} |`);
    }
    for (const t of ours.top1 ?? []) {
      const pct = (n: number) => `${n}/${t.rows} (${((100 * n) / t.rows).toFixed(2)}%)`;
      lines.push(`| ${t.precision} top-1 of every token vs transformers fp32, ${t.case} | ours ${pct(t.top1_same)}, `
        + `PyTorch fp16 SDPA ${pct(t.torch_fp16_same)}; largest reference margin of a row we miss ${t.largest_missed_margin.toExponential(1)} |`);
    }
    for (const precision of ['fp16', 'fp8', 'fp32']) {
      const all = (ours.top1 ?? []).filter((t) => t.precision === precision);
      if (all.length < 2) continue;
      const sum = (f: (t: typeof all[number]) => number) => all.reduce((a, t) => a + f(t), 0);
      const rows = sum((t) => t.rows);
      const pct = (n: number) => `${n}/${rows} (${((100 * n) / rows).toFixed(2)}%)`;
      lines.push(`| ${precision} top-1 of every token vs transformers fp32, all ${all.length} cases | ours ${pct(sum((t) => t.top1_same))}, `
        + `PyTorch fp16 SDPA ${pct(sum((t) => t.torch_fp16_same))} |`);
    }
    for (const l of ours.loop) {
      lines.push(`| ${l.precision} event loop, ${l.label} | ${l.requests} requests: longest stall ${l.max_stall_ms.toFixed(3)} ms, p99 ${l.p99_stall_ms.toFixed(3)} ms, ${l.gc ?? `${l.stalls_over_1ms ?? '?'} over 1 ms`} |`);
    }
    for (const note of ours.notes) lines.push(`| note | ${note} |`);
  }
  for (const note of torch?.notes ?? []) lines.push(`| torch note | ${note} |`);
  const failed = torch?.timings.filter((t) => t.error) ?? [];
  for (const t of failed.slice(0, 6)) lines.push(`| torch ${t.mode} ${t.case} failed | ${t.error} |`);
  return lines.join('\n') + '\n';
}

if (require.main === module) {
  const valuesOf = (flag: string) => process.argv.flatMap((a, i) => (a === flag && i + 1 < process.argv.length ? [process.argv[i + 1]] : []));
  const dirs = valuesOf('--dir');
  if (dirs.length === 0) dirs.push('.');
  const text = report(dirs);
  fs.writeFileSync(valuesOf('--out')[0] ?? path.join(dirs[0], 'report.md'), text);
  process.stdout.write(text);
}
