#!/usr/bin/env python3
"""Builds the CPU benchmark model as ONNX, from the same seeded weights that
src/tools/random-model.ts writes, so bench/cpu-bench.ts can compare FusedRT
and onnxruntime-node on identical weights without moving the model between
machines. The weight generator is specified in bench/README.md.

On the GPU machine (torch, transformers, onnx, onnxruntime):
    python3 bench/make_bench_onnx.py --out "$OUT"
writes bench-minilm.onnx.part0..N (each <= 15 MiB), bench-minilm.onnx.sha256
and bench-minilm.weights.json into --out.

    python3 bench/make_bench_onnx.py --weights-only
needs numpy only: it prints the weight checksum and exits.
"""
import argparse
import hashlib
import json
import math
import os
import sys
import tempfile

import numpy as np

# Mirrors BENCH_MODEL in bench/cpu-bench.ts: MiniLM-L6-H384's shape with an
# 8192-token vocabulary (the ONNX file must come back in under 64 MiB).
BENCH = dict(hidden=384, layers=6, heads=12, intermediate=1536, max_positions=512, vocab_size=8192, seed=1234)
PART_BYTES = 15 * 1024 * 1024
NAME = "bench-minilm"

# ---- the generator (src/tools/prng.ts) ---------------------------------------

U32 = np.uint32


def fnv1a32(text):
    h = 0x811C9DC5
    for byte in text.encode("utf-8"):
        h = ((h ^ byte) * 0x01000193) & 0xFFFFFFFF
    return h


def fmix32(x):
    x = x ^ (x >> U32(16))
    x = x * U32(0x85EBCA6B)
    x = x ^ (x >> U32(13))
    x = x * U32(0xC2B2AE35)
    return x ^ (x >> U32(16))


def stream_seed(name, seed):
    return (fnv1a32(name) ^ seed) & 0xFFFFFFFF


def random_uint32(key, index):
    """index: uint32 array; uint32 array arithmetic wraps modulo 2^32 like Math.imul."""
    return fmix32(index * U32(0x9E3779B1) + U32(key))


def uniform_float32(name, seed, count, center, amplitude):
    x = random_uint32(stream_seed(name, seed), np.arange(count, dtype=U32))
    u = (x >> U32(8)).astype(np.float64) / 16777216.0
    # Same float64 operations in the same order as TypeScript, rounded once to float32.
    return (center + (u - 0.5) * 2.0 * amplitude).astype(np.float32)


def check_golden_values():
    """The same numbers test/random-model.test.ts asserts for the TypeScript generator."""
    assert fnv1a32("a") == 0xE40C292C
    key = stream_seed("embeddings.word_embeddings.weight", 42)
    assert key == 0xDB668DBA, hex(key)
    got = random_uint32(key, np.array([0, 1, 2, 1000, 123456, 4294967295], dtype=U32))
    assert [int(v) for v in got] == [0xD6098BAE, 0xBD04F928, 0x4FDDB7EB, 0xDFC1C50C, 0xFBF37A06, 0x57758B0A], got
    weights = uniform_float32("embeddings.word_embeddings.weight", 42, 5, 0.0, 0.05)
    assert weights.astype("<f4").tobytes().hex() == "dea8093d1d43c33c50079abc4ae982bc637cd0bc", weights
    gains = uniform_float32("bert.encoder.layer.0.output.LayerNorm.weight", 7, 3, 1.0, 0.1)
    assert gains.astype("<f4").tobytes().hex() == "7139723f62946a3f6749763f", gains


# ---- the model (bertTensorShapes / initOf in src/tools/random-model.ts) ------


def bert_model_shapes(c):
    """Weights of HF BertModel (no prefix, with pooler) in declaration order."""
    h, inter = c["hidden"], c["intermediate"]
    shapes = [
        ("embeddings.word_embeddings.weight", (c["vocab_size"], h)),
        ("embeddings.position_embeddings.weight", (c["max_positions"], h)),
        ("embeddings.token_type_embeddings.weight", (2, h)),
        ("embeddings.LayerNorm.weight", (h,)),
        ("embeddings.LayerNorm.bias", (h,)),
    ]
    for layer in range(c["layers"]):
        at = f"encoder.layer.{layer}"
        for name, out_f, in_f in [
            ("attention.self.query", h, h), ("attention.self.key", h, h), ("attention.self.value", h, h),
            ("attention.output.dense", h, h), ("attention.output.LayerNorm", h, None),
            ("intermediate.dense", inter, h), ("output.dense", h, inter), ("output.LayerNorm", h, None),
        ]:
            shapes.append((f"{at}.{name}.weight", (out_f, in_f) if in_f else (out_f,)))
            shapes.append((f"{at}.{name}.bias", (out_f,)))
    shapes += [("pooler.dense.weight", (h, h)), ("pooler.dense.bias", (h,))]
    return shapes


def init_of(name):
    if name.endswith("LayerNorm.weight"):
        return 1.0, 0.1
    if name.endswith("LayerNorm.bias"):
        return 0.0, 0.05
    if name.endswith("bias"):
        return 0.0, 0.02
    return 0.0, 0.05


def random_weights(c):
    weights = {}
    for name, shape in bert_model_shapes(c):
        center, amplitude = init_of(name)
        weights[name] = uniform_float32(name, c["seed"], math.prod(shape), center, amplitude).reshape(shape)
    return weights


def weight_checksum(weights):
    """weightChecksum in src/tools/random-model.ts: sha256 in name order, and the exact sum."""
    digest = hashlib.sha256()
    for name in sorted(weights):
        array = np.ascontiguousarray(weights[name], dtype="<f4")
        digest.update(f"{name}\n{','.join(str(d) for d in array.shape)}\n".encode("utf-8"))
        digest.update(array.tobytes())
    total = math.fsum(np.concatenate([np.ravel(a) for a in weights.values()]).astype(np.float64).tolist())
    return {"sha256": digest.hexdigest(), "sum": total}


# ---- torch, ONNX export and check -------------------------------------------


def build_torch_model(c, weights):
    import torch
    from transformers import BertConfig, BertModel

    config = BertConfig(
        vocab_size=c["vocab_size"], hidden_size=c["hidden"], num_hidden_layers=c["layers"],
        num_attention_heads=c["heads"], intermediate_size=c["intermediate"],
        max_position_embeddings=c["max_positions"], type_vocab_size=2, layer_norm_eps=1e-12,
        hidden_act="gelu", pad_token_id=0, position_embedding_type="absolute",
        # Plain attention ops export to a portable graph with either exporter.
        attn_implementation="eager",
    )
    model = BertModel(config).eval()
    state = {name: torch.from_numpy(array.copy()) for name, array in weights.items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    buffers = {name for name, _ in model.named_buffers()}
    assert not unexpected, f"weights the model does not have: {unexpected}"
    assert all(name in buffers for name in missing), f"weights the model lacks: {missing}"
    held = {name: tensor.detach().numpy() for name, tensor in model.state_dict().items() if name in weights}
    return model, held


def last_hidden_state_module(model):
    """Wraps BertModel so the graph has one output and no pooler."""
    import torch

    class LastHiddenState(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(
                input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
            ).last_hidden_state

    return LastHiddenState().eval()


def random_batch(rng, c, batch, seq, ragged):
    ids = rng.integers(5, c["vocab_size"], size=(batch, seq), dtype=np.int64)
    types = rng.integers(0, 2, size=(batch, seq), dtype=np.int64)
    mask = np.ones((batch, seq), dtype=np.int64)
    if ragged:
        for row in range(1, batch):
            length = int(rng.integers(1, seq))
            mask[row, length:] = 0
            ids[row, length:] = 0
    return ids, mask, types


def export_onnx(model, c, path, exporter):
    """exporter: "torchscript" (opset 17, the brief's target) or "dynamo" (torch.export; opset 18, its lowest)."""
    import torch
    import onnx

    wrapper = last_hidden_state_module(model)
    # Padding in the sample keeps tracing off any "mask is all ones" shortcut.
    sample = tuple(torch.from_numpy(a) for a in random_batch(np.random.default_rng(0), c, 2, 16, True))
    names = ["input_ids", "attention_mask", "token_type_ids"]
    common = dict(input_names=names, output_names=["last_hidden_state"])
    with torch.no_grad():
        if exporter == "torchscript":
            axes = {name: {0: "batch", 1: "sequence"} for name in names + ["last_hidden_state"]}
            torch.onnx.export(wrapper, sample, path, dynamic_axes=axes, opset_version=17, do_constant_folding=True,
                              dynamo=False, **common)
            opset = 17
        else:
            batch = torch.export.Dim("batch", min=1, max=1024)
            sequence = torch.export.Dim("sequence", min=1, max=c["max_positions"])
            shapes = {name: {0: batch, 1: sequence} for name in names}
            torch.onnx.export(wrapper, sample, path, dynamic_shapes=shapes, opset_version=18, dynamo=True,
                              external_data=False, **common)
            opset = 18
    onnx.checker.check_model(path)
    return opset


def export_and_verify(model, c, path):
    """Tries the TorchScript exporter, then the dynamo one: which traces a given transformers version varies."""
    for exporter in ["torchscript", "dynamo"]:
        try:
            opset = export_onnx(model, c, path, exporter)
            worst = verify_onnx(model, c, path)
            print(f"exported with the {exporter} exporter, opset {opset}")
            return {"exporter": exporter, "opset": opset, "maxAbsDiffOrtVsTorch": worst}
        except Exception as err:  # noqa: BLE001 - any failure moves on to the next exporter
            print(f"the {exporter} exporter failed: {type(err).__name__}: {err}", file=sys.stderr)
    raise SystemExit("no exporter produced an ONNX model that onnxruntime runs like torch")


def verify_onnx(model, c, path):
    """onnxruntime (CPU) against torch on ragged and full batches; returns the worst difference."""
    import onnxruntime as ort
    import torch

    session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    rng = np.random.default_rng(1)
    worst = 0.0
    for batch, seq, ragged in [(3, 37, True), (1, 128, False), (8, 128, False)]:
        ids, mask, types = random_batch(rng, c, batch, seq, ragged)
        got = session.run(["last_hidden_state"], {"input_ids": ids, "attention_mask": mask, "token_type_ids": types})[0]
        with torch.no_grad():
            want = model(
                input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask),
                token_type_ids=torch.from_numpy(types),
            ).last_hidden_state.numpy()
        valid = mask.astype(bool)
        diff = float(np.abs(got[valid] - want[valid]).max())
        print(f"onnxruntime vs torch, batch {batch} x seq {seq}{' ragged' if ragged else ''}: max |diff| {diff:.3g}")
        worst = max(worst, diff)
    assert worst < 1e-4, f"onnxruntime and torch disagree by {worst}"
    return worst


def write_parts(path, out_dir):
    data = open(path, "rb").read()
    # The device machine returns at most 64 MiB per call; leave room for the other files.
    assert len(data) < 60 * 1024 * 1024, f"the ONNX model is {len(data)} bytes, too large to bring back"
    parts = []
    for index, start in enumerate(range(0, len(data), PART_BYTES)):
        part = os.path.join(out_dir, f"{NAME}.onnx.part{index}")
        with open(part, "wb") as f:
            f.write(data[start:start + PART_BYTES])
        parts.append(os.path.basename(part))
    with open(os.path.join(out_dir, f"{NAME}.onnx.sha256"), "w") as f:
        f.write(f"{hashlib.sha256(data).hexdigest()}  {NAME}.onnx\n")
    return len(data), parts


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", help="folder for the ONNX parts, .sha256 and .weights.json")
    parser.add_argument("--weights-only", action="store_true", help="print the weight checksum (numpy only) and exit")
    args = parser.parse_args()
    if not args.weights_only and not args.out:
        parser.error("--out is required unless --weights-only")

    check_golden_values()
    print("generator golden values: ok")
    c = dict(BENCH)
    weights = random_weights(c)
    checksum = weight_checksum(weights)
    print(f"weights ({len(weights)} tensors, {sum(a.size for a in weights.values())} values): "
          f"sha256 {checksum['sha256']} sum {checksum['sum']:.9f}")
    if args.weights_only:
        return

    os.makedirs(args.out, exist_ok=True)
    model, held = build_torch_model(c, weights)
    held_checksum = weight_checksum(held)
    assert held_checksum["sha256"] == checksum["sha256"], "torch does not hold the generated weights"
    print("torch model holds the generated weights: ok")

    # The whole file stays out of --out: only its parts come back from the device machine.
    with tempfile.TemporaryDirectory() as scratch:
        onnx_path = os.path.join(scratch, f"{NAME}.onnx")
        export = export_and_verify(model, c, onnx_path)
        size, parts = write_parts(onnx_path, args.out)
    import onnxruntime
    import torch
    import transformers

    info = {
        "model": c, "weights": checksum, "onnxBytes": size, "parts": parts, **export,
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__,
                     "onnxruntime": onnxruntime.__version__, "numpy": np.__version__},
    }
    with open(os.path.join(args.out, f"{NAME}.weights.json"), "w") as f:
        json.dump(info, f, indent=2)
        f.write("\n")
    print(f"wrote {len(parts)} parts ({size} bytes) to {args.out}")


if __name__ == "__main__":
    sys.exit(main())
