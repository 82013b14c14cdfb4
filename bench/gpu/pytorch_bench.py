#!/usr/bin/env python3
"""PyTorch side of the GPU benchmark (bench/gpu/README.md).

Builds a BERT-base BertForMaskedLM with transformers' own random
initialisation (fixed seed), saves it (fp16 safetensors + a dummy vocab.txt)
for FusedRT, writes the exact inputs both engines run, and times PyTorch on
them: fp16 eager, SDPA and SDPA under a CUDA graph, fp32 eager and SDPA.
The MLM head runs on the masked rows only (one [MASK] per sequence), as
FusedRT does: hidden states, gather the rows, then model.cls.

    python3 bench/gpu/pytorch_bench.py --model-dir DIR --out DIR [--reference-dir DIR] [--seq 128|384]

--seq times (and writes references for) the cases of one sequence length
only, so that the benchmark can be split over two device calls; inputs.json
always holds every case.

Writes DIR/{config.json,model.safetensors,vocab.txt,tokenizer_config.json},
OUT/inputs.json, REFERENCE_DIR/reference-*.f32 (default OUT; fp32 eager
logits of the variable-length cases of batch 8 and 128, to prove FusedRT runs
the same model and to hold its logits and top-1 tokens to them),
REFERENCE_DIR/top1-*.json (for the same cases, the MLM head on every token,
not only the [MASK] ones: fp32 eager's best token and its margin over the
second, and fp16 SDPA's best token, so that top-1 agreement is counted over
some 45,000 rows and set against PyTorch's own fp16) and OUT/torch.json.
"""
import argparse
import json
import os
import random
import statistics
import sys
import time

import torch
import transformers
from transformers import BertConfig, BertForMaskedLM

SEED = 20261121
SEQ_LENGTHS = [128, 384]
BATCH_SIZES = [1, 8, 32, 128]
SPECIALS = {0: "[PAD]", 100: "[UNK]", 101: "[CLS]", 102: "[SEP]", 103: "[MASK]"}
CLS, SEP, MASK = 101, 102, 103
# Random ids avoid the specials and the [unused] range below 1000, as real text would.
FIRST_WORD_ID = 1000
WARMUP = 10
WARMUP_BUDGET_S = 1.0  # fewer warm-up runs (at least 3) for the slowest cases
RUNS = 100
# The cases whose fp32 eager logits are saved as the reference FusedRT is
# checked against: 2 x (8 + 128) masked rows over both sequence lengths.
REFERENCE_BATCHES = (8, 128)

BERT_BASE = dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                 intermediate_size=3072, max_position_embeddings=512)


def log(*args):
    print(*args, flush=True)


def make_inputs(rng):
    """Every case: lengths, flat ids (packed) and the in-sequence [MASK] position of each sequence."""
    vocab = BERT_BASE["vocab_size"]
    cases = []
    for seq in SEQ_LENGTHS:
        for batch in BATCH_SIZES:
            for kind in ("fixed", "varlen"):
                lengths = [seq] * batch if kind == "fixed" else [rng.randint(seq // 8, seq) for _ in range(batch)]
                ids, masks = [], []
                for length in lengths:
                    row = [CLS] + [rng.randrange(FIRST_WORD_ID, vocab) for _ in range(length - 2)] + [SEP]
                    m = rng.randint(1, length - 2)
                    row[m] = MASK
                    ids.extend(row)
                    masks.append(m)
                cases.append(dict(name=f"s{seq}-b{batch}-{kind}", seq=seq, batch=batch, kind=kind,
                                  lengths=lengths, ids=ids, maskPositions=masks))
    return cases


def save_model(model, model_dir):
    os.makedirs(model_dir, exist_ok=True)
    model.save_pretrained(model_dir, safe_serialization=True)
    with open(os.path.join(model_dir, "vocab.txt"), "w") as f:
        for i in range(BERT_BASE["vocab_size"]):
            f.write(SPECIALS.get(i, f"[unused{i}]" if i < FIRST_WORD_ID else f"w{i}") + "\n")
    with open(os.path.join(model_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"do_lower_case": True, "mask_token": "[MASK]", "pad_token": "[PAD]", "unk_token": "[UNK]",
                   "cls_token": "[CLS]", "sep_token": "[SEP]", "model_max_length": 512}, f)


def set_attention(model, name):
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation(name)
    else:
        model.config._attn_implementation = name
    return getattr(model.config, "_attn_implementation", name)


class Case:
    """A case's tensors on the GPU, padded to seq (PyTorch has no packed path)."""

    def __init__(self, spec, device):
        self.spec = spec
        b, s = spec["batch"], spec["seq"]
        ids = torch.zeros(b, s, dtype=torch.long)
        mask = torch.zeros(b, s, dtype=torch.long)
        offset = 0
        for i, length in enumerate(spec["lengths"]):
            ids[i, :length] = torch.tensor(spec["ids"][offset:offset + length])
            mask[i, :length] = 1
            offset += length
        self.input_ids = ids.to(device)
        self.token_type_ids = torch.zeros_like(self.input_ids)
        # Always the 2-D mask a tokenizer gives (all ones at fixed lengths):
        # with torch 2.11 and transformers 5.17 on an H100, BERT-base at 32 x
        # 128 under a CUDA graph takes 2.25 ms with it and 5.3-5.4 ms with no
        # mask at all (bench/RESULTS.md, twelfth session), which this bench
        # passed before.
        self.attention_mask = mask.to(device)
        self.rows = torch.arange(b, device=device)
        self.cols = torch.tensor(spec["maskPositions"], device=device)


def forward(model, case, mask):
    hidden = model.bert(input_ids=case.input_ids, attention_mask=mask, token_type_ids=case.token_type_ids)[0]
    return model.cls(hidden[case.rows, case.cols])


def top1_every_token(model, case):
    """The MLM head on every real token (packed order): best token id, and its logit's margin over the second."""
    hidden = model.bert(input_ids=case.input_ids, attention_mask=case.attention_mask,
                        token_type_ids=case.token_type_ids)[0]
    positions = torch.arange(case.spec["seq"], device=hidden.device)
    lengths = torch.tensor(case.spec["lengths"], device=hidden.device)
    rows = hidden[positions[None, :] < lengths[:, None]]
    ids, margins = [], []
    for chunk in rows.split(4096):
        top = model.cls(chunk).float().topk(2, dim=1)
        ids.append(top.indices[:, 0])
        margins.append(top.values[:, 0] - top.values[:, 1])
    return torch.cat(ids).cpu().tolist(), torch.cat(margins).cpu().tolist()


def time_cuda(fn):
    """Median ms over CUDA events of RUNS runs, after warm-up."""
    t0 = time.perf_counter()
    for i in range(WARMUP):
        fn()
        if i >= 2:
            torch.cuda.synchronize()
            if time.perf_counter() - t0 > WARMUP_BUDGET_S:
                break
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(RUNS)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(RUNS)]
    for i in range(RUNS):
        starts[i].record()
        fn()
        ends[i].record()
    torch.cuda.synchronize()
    times = sorted(s.elapsed_time(e) for s, e in zip(starts, ends))
    return dict(median_ms=statistics.median(times), p90_ms=times[int(0.9 * (RUNS - 1))], runs=RUNS)


def graph_runner(model, case):
    """Captures the whole forward on the case's static buffers; returns a replay function.
    transformers may inspect a 2-D mask on the host (not allowed while capturing), so a
    precomputed 4-D boolean mask (True = attend) is the fallback."""
    m = case.attention_mask.bool()
    attempts = [("2-D mask", case.attention_mask),
                ("4-D bool mask", m[:, None, None, :].expand(-1, 1, m.shape[1], -1).contiguous())]
    errors = []
    for label, mask in attempts:
        try:
            side = torch.cuda.Stream()
            side.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(side):
                for _ in range(3):
                    forward(model, case, mask)
            torch.cuda.current_stream().wait_stream(side)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                static_out = forward(model, case, mask)
            graph.replay()
            torch.cuda.synchronize()
            want = forward(model, case, mask)
            diff = (static_out.float() - want.float()).abs().max().item()
            return graph.replay, label, diff, errors
        except Exception as e:  # noqa: BLE001 - report and try the next way
            errors.append(f"{label}: {type(e).__name__}: {str(e).splitlines()[0][:200]}")
            torch.cuda.synchronize()
    return None, None, None, errors


def dense_gemm_tflops(device):
    n = 8192
    a = torch.randn(n, n, device=device, dtype=torch.float16)
    b = torch.randn(n, n, device=device, dtype=torch.float16)
    stats = time_cuda(lambda: torch.matmul(a, b))
    return dict(n=n, median_ms=stats["median_ms"], runs=stats["runs"], tflops=2 * n ** 3 / stats["median_ms"] / 1e9)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--reference-dir", help="where the reference logits go (default: --out); they are large")
    ap.add_argument("--seq", type=int, choices=SEQ_LENGTHS, help="only the cases of this sequence length")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    device = torch.device("cuda")
    torch.backends.cuda.matmul.allow_tf32 = False  # true fp32 for the fp32 reference, as FusedRT's fp32 plans
    torch.backends.cudnn.allow_tf32 = False

    log(f"torch {torch.__version__}, transformers {transformers.__version__}, {torch.cuda.get_device_name(0)}")
    torch.manual_seed(SEED)
    model = BertForMaskedLM(BertConfig(**BERT_BASE)).eval().half()
    save_model(model, args.model_dir)
    log(f"saved fp16 model to {args.model_dir}")
    cases = make_inputs(random.Random(SEED))
    with open(os.path.join(args.out, "inputs.json"), "w") as f:
        json.dump(dict(seed=SEED, model=BERT_BASE, cases=cases), f)
    if args.seq is not None:
        cases = [spec for spec in cases if spec["seq"] == args.seq]
    model = model.to(device)

    result = dict(device=torch.cuda.get_device_name(0), torch=torch.__version__, transformers=transformers.__version__,
                  gemm=dense_gemm_tflops(device), timings=[], notes=[])
    log(f"dense fp16 GEMM 8192^3: {result['gemm']['tflops']:.1f} TFLOP/s")

    modes = [("fp16", "eager", False), ("fp16", "sdpa", False), ("fp16", "sdpa", True),
             ("fp32", "eager", False), ("fp32", "sdpa", False)]
    reference_specs = [spec for spec in cases if spec["batch"] in REFERENCE_BATCHES and spec["kind"] == "varlen"]
    fp16_top1 = {}
    with torch.inference_mode():
        for dtype in ("fp16", "fp32"):
            # The fp32 model is the saved fp16 weights widened: both engines run the same numbers.
            model = model.to(torch.float16 if dtype == "fp16" else torch.float32)
            if dtype == "fp16":
                set_attention(model, "sdpa")
                for spec in reference_specs:
                    fp16_top1[spec["name"]] = top1_every_token(model, Case(spec, device))[0]
            if dtype == "fp32":
                for spec in reference_specs:
                    set_attention(model, "eager")
                    reference = Case(spec, device)
                    logits = forward(model, reference, reference.attention_mask).float().cpu().contiguous()
                    path = os.path.join(args.reference_dir or args.out, f"reference-{spec['name']}.f32")
                    logits.numpy().tofile(path)
                    result["notes"].append(f"reference logits {spec['name']} (fp32 eager) in {os.path.basename(path)}")
                    ids, margins = top1_every_token(model, reference)
                    torch_ids = fp16_top1[spec["name"]]
                    same = sum(a == b for a, b in zip(ids, torch_ids))
                    with open(os.path.join(args.reference_dir or args.out, f"top1-{spec['name']}.json"), "w") as f:
                        json.dump(dict(ids=ids, margins=margins, torch_fp16_sdpa_ids=torch_ids), f)
                    result["notes"].append(f"top-1 over every token of {spec['name']}: torch fp16 sdpa agrees with fp32 "
                                           f"eager on {same}/{len(ids)} rows")
            for mode_dtype, attention, graphed in modes:
                if mode_dtype != dtype:
                    continue
                used = set_attention(model, attention)
                mode = f"{dtype}-{attention}" + ("-graph" if graphed else "")
                for spec in cases:
                    case = Case(spec, device)
                    entry = dict(mode=mode, case=spec["name"], attn_implementation=used)
                    try:
                        if graphed:
                            replay, label, diff, errors = graph_runner(model, case)
                            entry["graph_errors"] = errors
                            if replay is None:
                                raise RuntimeError("capture failed: " + " | ".join(errors))
                            entry["graph_mask"], entry["graph_vs_eager_max_abs"] = label, diff
                            entry.update(time_cuda(replay))
                        else:
                            entry.update(time_cuda(lambda: forward(model, case, case.attention_mask)))
                    except Exception as e:  # noqa: BLE001 - one failed case must not end the run
                        entry["error"] = f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"
                    result["timings"].append(entry)
                    shown = f"{entry['median_ms']:.3f} ms ({entry['runs']} runs)" if "median_ms" in entry else entry["error"]
                    log(f"{mode:18s} {spec['name']:18s} {shown}")
                    del case
                    torch.cuda.empty_cache()
                with open(os.path.join(args.out, "torch.json"), "w") as f:
                    json.dump(result, f, indent=1)
    log(f"wrote {os.path.join(args.out, 'torch.json')}")


if __name__ == "__main__":
    sys.exit(main())
