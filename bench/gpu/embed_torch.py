#!/usr/bin/env python3
"""PyTorch on the embedding benchmark's model and batch (bench/embed-pooling.ts).

    python3 bench/gpu/embed_torch.py --model-dir DIR [--batch 32] [--seq 128] [--vectors FILE]

Loads the random BertModel that embed-pooling wrote (DIR: its --work
folder's SHAPE-model) in fp16 with SDPA, makes the same token ids (the same
generator, seed 11), and times sentence embeddings the way
sentence-transformers makes them: the mean of last_hidden_state under the
attention mask, then L2 normalisation. Eager and under a CUDA graph; GPU time
by CUDA events, 10 warm-up runs, median of 100. With --vectors (FusedRT's
vectors, float32, from embed-pooling --save-vectors) it prints the largest
difference and the least cosine between the two.
"""
import argparse

import numpy as np
import torch
import torch.nn.functional as F
from transformers import BertModel

VOCAB = 30522
WARMUP = 10
RUNS = 100


def token_ids(count):
    """embed-pooling.ts's ids: a 32-bit LCG from 11, ids in [1000, VOCAB)."""
    state, ids = 11, []
    for _ in range(count):
        state = (state * 1664525 + 1013904223) & 0xFFFFFFFF
        ids.append(1000 + int(state / 2**32 * (VOCAB - 1000)))
    return ids


def median_ms(fn):
    for _ in range(WARMUP):
        fn()
    times = []
    for _ in range(RUNS):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        torch.cuda.synchronize()
        times.append(start.elapsed_time(end))
    return sorted(times)[len(times) // 2]


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--model-dir", required=True)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--vectors")
    args = parser.parse_args()

    model = BertModel.from_pretrained(args.model_dir, torch_dtype=torch.float16, attn_implementation="sdpa",
                                      local_files_only=True).cuda().eval()
    ids = torch.tensor(token_ids(args.batch * args.seq), device="cuda").view(args.batch, args.seq)
    mask = torch.ones_like(ids)

    def embed():
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return F.normalize(((hidden * weights).sum(1) / weights.sum(1)).float(), dim=-1)

    with torch.inference_mode():
        eager_ms = median_ms(embed)
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                embed()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            captured = embed()
        graph_ms = median_ms(graph.replay)
        vectors = embed().cpu().numpy()
    print(f"PyTorch {torch.__version__} on {torch.cuda.get_device_name(0)}, {args.batch} x {args.seq}, fp16 SDPA, "
          f"mean pooling + normalise, GPU time (median of {RUNS})")
    print(f"| PyTorch eager | {eager_ms:.3f} ms |")
    print(f"| PyTorch under a CUDA graph | {graph_ms:.3f} ms |")
    assert torch.allclose(captured.cpu(), torch.from_numpy(vectors), atol=1e-3), "the graph's vectors differ"
    if args.vectors:
        ours = np.fromfile(args.vectors, dtype=np.float32).reshape(vectors.shape)
        cosine = (ours * vectors).sum(1) / (np.linalg.norm(ours, axis=1) * np.linalg.norm(vectors, axis=1))
        print(f"FusedRT against PyTorch: max |difference| {np.abs(ours - vectors).max():.2e}, least cosine {cosine.min():.6f}")


if __name__ == "__main__":
    main()
