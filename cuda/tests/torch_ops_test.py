#!/usr/bin/env python3
"""Every fused op of cuda/ and the backend's GEMM against PyTorch's own ops
(issue 3: each op tested against the CPU op, by the kernel tests beside
this file, and against PyTorch, here). Runs on the GPU machine, on
PyTorch's CUDA tensors, through the C interface of cuda/tests/ops_c_api.cu:

    nvcc -std=c++17 -O3 -arch=native -shared -Xcompiler -fPIC -DFUSEDRT_WITH_CUDA=1 -I native \\
      -o /tmp/libfusedrt_ops.so cuda/tests/ops_c_api.cu cuda/*.cu native/cuda_gemm.cpp -lcublasLt -lcublas
    python3 cuda/tests/torch_ops_test.py /tmp/libfusedrt_ops.so

The references are PyTorch's ops in fp32 on the same inputs (fp16 inputs
widened exactly): F.embedding sums and F.layer_norm, F.scaled_dot_product_attention
per sequence, index_select, per-sequence means, F.linear with F.gelu / relu /
tanh, softmax with a stable descending sort. Tolerances: fp32 ops within float rounding of the
reference; fp16 outputs within their own rounding (half an ulp) plus the
fp32 accumulation's; fp16 attention (fp16 probabilities times V, as flash
attention does) within 3e-3 or twice PyTorch's own fp16 SDPA error on the
same inputs, whichever is larger. Prints a table; exit status 0 only if
every check passes.
"""
import ctypes
import math
import sys

import torch
import torch.nn.functional as F

torch.backends.cuda.matmul.allow_tf32 = False
DEVICE = torch.device("cuda")
GELU, GELU_TANH, RELU, TANH, NONE = 1, 2, 3, 4, 0  # native/activation.h
ACTIVATIONS = {NONE: lambda x: x, GELU: lambda x: F.gelu(x), GELU_TANH: lambda x: F.gelu(x, approximate="tanh"),
               RELU: F.relu, TANH: torch.tanh}
ACTIVATION_NAMES = {NONE: "none", GELU: "gelu", GELU_TANH: "gelu_tanh", RELU: "relu", TANH: "tanh"}
HALF_ULP = 2.0 ** -11  # relative rounding of an fp16 value
ACCUMULATION = 2e-4  # fp32 sums of up to 3072 products of values in [-1, 1] x [-0.05, 0.05] (cuda/tests/small_gemm_test.cu)

rows_of_table = []
failures = 0


def report(op, case, dtype, error, tolerance):
    """error and tolerance: the worst of error / tolerance is what must stay <= 1."""
    global failures
    ratio = float((error / tolerance).max()) if torch.is_tensor(error) else error / tolerance
    worst = float(error.max()) if torch.is_tensor(error) else error
    ok = ratio <= 1.0 and math.isfinite(ratio)
    failures += 0 if ok else 1
    rows_of_table.append(f"| {op} | {case} | {dtype} | {worst:.2e} | {ratio:.3f} | {'ok' if ok else 'FAIL'} |")


class Ops:
    def __init__(self, path):
        self.lib = ctypes.CDLL(path)
        self.lib.fusedrt_last_error.restype = ctypes.c_char_p

    def __call__(self, name, *args):
        converted = []
        for a in args:
            if torch.is_tensor(a):
                converted.append(ctypes.c_void_p(a.data_ptr()))
            elif a is None:
                converted.append(ctypes.c_void_p(0))
            elif isinstance(a, float):
                converted.append(ctypes.c_float(a))
            else:
                converted.append(ctypes.c_int64(a))
        function = getattr(self.lib, "fusedrt_" + name)
        function.restype = ctypes.c_int
        torch.cuda.synchronize()
        if function(*converted) != 0:
            raise RuntimeError(f"{name}: {self.lib.fusedrt_last_error().decode()}")
        torch.cuda.synchronize()


def int32(values):
    return torch.tensor(values, dtype=torch.int32, device=DEVICE)


def uniform(*shape, scale=1.0, dtype=torch.float32):
    return ((torch.rand(*shape, device=DEVICE) * 2 - 1) * scale).to(dtype)


def dtype_code(dtype):
    return 1 if dtype == torch.float16 else 0


def name_of(dtype):
    return "fp16" if dtype == torch.float16 else "fp32"


def output_tolerance(reference, dtype, absolute):
    """Rounding of the output to dtype (fp16: half an ulp) plus `absolute` scaled like the value."""
    rounding = HALF_ULP * reference.abs() if dtype == torch.float16 else 2.0 ** -23 * reference.abs()
    return rounding + absolute * (1 + reference.abs())


def cu_seqlens_of(lengths):
    return int32([0] + [sum(lengths[: i + 1]) for i in range(len(lengths))])


def check_embed_layernorm(ops):
    for dtype in (torch.float32, torch.float16):
        for hidden in (96, 768):
            lengths = [5, 128, 1, 77]
            tokens = sum(lengths)
            vocab, positions, types = 1000, 512, 2
            word = uniform(vocab, hidden, dtype=dtype)
            position = uniform(positions, hidden, scale=0.5, dtype=dtype)
            token_type = uniform(types, hidden, scale=0.5, dtype=dtype)
            gamma = uniform(hidden) + 1
            beta = uniform(hidden, scale=0.1)
            ids = torch.randint(0, vocab, (tokens,), device=DEVICE, dtype=torch.int32)
            type_ids = torch.randint(0, types, (tokens,), device=DEVICE, dtype=torch.int32)
            out = torch.empty(tokens, hidden, device=DEVICE, dtype=dtype)
            ops("embed_layernorm", dtype_code(dtype), ids, type_ids, cu_seqlens_of(lengths), tokens, len(lengths),
                hidden, word, position, token_type, gamma, beta, 1e-12, out)
            where = torch.cat([torch.arange(n, device=DEVICE) for n in lengths])
            summed = F.embedding(ids.long(), word.float()) + position.float()[where] + F.embedding(type_ids.long(), token_type.float())
            want = F.layer_norm(summed, (hidden,), gamma, beta, 1e-12)
            report("embed_layernorm", f"{tokens} tokens x {hidden}", name_of(dtype), (out.float() - want).abs(),
                   output_tolerance(want, dtype, 1e-5))


def check_add_layernorm(ops):
    for dtype in (torch.float32, torch.float16):
        for rows, cols in ((37, 768), (128, 1024)):
            x = uniform(rows, cols, dtype=dtype)
            residual = uniform(rows, cols, dtype=dtype)
            bias = uniform(cols, scale=0.1)
            gamma = uniform(cols) + 1
            beta = uniform(cols, scale=0.1)
            out = torch.empty_like(x)
            ops("add_layernorm", dtype_code(dtype), x, residual, bias, gamma, beta, 1e-12, rows, cols, out, None, 0)
            want = F.layer_norm(x.float() + bias + residual.float(), (cols,), gamma, beta, 1e-12)
            report("add_layernorm", f"{rows} x {cols}, bias, residual", name_of(dtype), (out.float() - want).abs(),
                   output_tolerance(want, dtype, 1e-5))
    # The split-K partials the backend hands it (docs/cuda.md): summed in fp32, in order.
    rows, cols, count = 128, 768, 3
    partials = uniform(count, rows, cols)
    residual = uniform(rows, cols, dtype=torch.float16)
    bias, gamma, beta = uniform(cols, scale=0.1), uniform(cols) + 1, uniform(cols, scale=0.1)
    out = torch.empty(rows, cols, device=DEVICE, dtype=torch.float16)
    ops("add_layernorm", 1, None, residual, bias, gamma, beta, 1e-12, rows, cols, out, partials, count)
    summed = partials[0] + partials[1] + partials[2]
    want = F.layer_norm(summed + bias + residual.float(), (cols,), gamma, beta, 1e-12)
    report("add_layernorm", f"{rows} x {cols} from {count} fp32 partials", "fp16", (out.float() - want).abs(),
           output_tolerance(want, torch.float16, 1e-5))


def attention_reference(qkv, lengths, heads, head_dim, dtype=torch.float32):
    """Per sequence, SDPA over its own tokens in `dtype`: [tokens, heads * head_dim] in fp32."""
    outs, start = [], 0
    width = heads * head_dim
    for n in lengths:
        block = qkv[start:start + n].to(dtype)
        q, k, v = (block[:, i * width:(i + 1) * width].reshape(n, heads, head_dim).transpose(0, 1) for i in range(3))
        outs.append(F.scaled_dot_product_attention(q, k, v).transpose(0, 1).reshape(n, width).float())
        start += n
    return torch.cat(outs)


def check_attention(ops):
    lengths = [1, 17, 128, 64, 200, 513]
    tokens = sum(lengths)
    cu = cu_seqlens_of(lengths)
    for dtype in (torch.float32, torch.float16):
        for heads, head_dim in ((12, 64), (4, 32), (4, 128), (2, 48)):
            width = heads * head_dim
            qkv = (torch.randn(tokens, 3 * width, device=DEVICE) * 0.7).to(dtype)
            scale = 1 / math.sqrt(head_dim)
            want = attention_reference(qkv, lengths, heads, head_dim)
            out = torch.empty(tokens, width, device=DEVICE, dtype=dtype)
            max_seqlen = (max(lengths) + 63) // 64 * 64  # the backend's bucket
            ops("attention", dtype_code(dtype), qkv, cu, len(lengths), max_seqlen, heads, head_dim, scale, out, tokens)
            error = float((out.float() - want).abs().max())
            if dtype == torch.float16:
                theirs = float((attention_reference(qkv, lengths, heads, head_dim, torch.float16) - want).abs().max())
                tolerance = max(3e-3, 2 * theirs)
                case = f"{tokens} tokens, {heads} x {head_dim} (PyTorch fp16 SDPA: {theirs:.1e})"
            else:
                tolerance = 1e-5
                case = f"{tokens} tokens, {heads} x {head_dim}"
            report("attention", case, name_of(dtype), error, tolerance)
            # The same queries through attention_rows, which serves the selected rows.
            query_rows = int32([0, 1, 17, 18 + 127, 146, 300, tokens - 1])
            rows_out = torch.empty(len(query_rows), width, device=DEVICE, dtype=dtype)
            ops("attention_rows", dtype_code(dtype), qkv, cu, len(lengths), heads, head_dim, scale, query_rows,
                len(query_rows), rows_out)
            rows_error = float((rows_out.float() - want[query_rows.long()]).abs().max())
            report("attention_rows", f"{len(query_rows)} query rows, {heads} x {head_dim}", name_of(dtype), rows_error,
                   tolerance)


def check_gather_rows(ops):
    for dtype in (torch.float32, torch.float16):
        x = uniform(50, 768, dtype=dtype)
        index = int32([0, 49, 7, 50, 7])  # 50 is past the input: the last row (a bucket's padding)
        out = torch.empty(5, 768, device=DEVICE, dtype=dtype)
        ops("gather_rows", dtype_code(dtype), x, 50, index, 5, 768, out)
        want = x.index_select(0, index.long().clamp(max=49))
        report("gather_rows", "5 of 50 rows, one past the end", name_of(dtype), float((out != want).sum()), 0.5)


def check_mean_rows(ops):
    lengths = [1, 128, 0, 300, 57, 0]  # empty sequences stand for a bucket's padding: zeros
    cu = cu_seqlens_of(lengths)
    for dtype in (torch.float32, torch.float16):
        x = uniform(sum(lengths), 768, scale=3.0, dtype=dtype)
        out = torch.empty(len(lengths), 768, device=DEVICE, dtype=dtype)
        ops("mean_rows", dtype_code(dtype), x, cu, len(lengths), 768, out)
        starts = cu.tolist()
        want = torch.stack([x[a:b].float().mean(0) if b > a else torch.zeros(768, device=DEVICE)
                            for a, b in zip(starts[:-1], starts[1:])])
        report("mean_rows", "sequences of 1, 128, 0, 300, 57, 0 rows", name_of(dtype), (out.float() - want).abs(),
               output_tolerance(want, dtype, 1e-5))


def check_bias_activation(ops):
    for dtype in (torch.float32, torch.float16):
        for activation in (NONE, GELU, GELU_TANH, RELU, TANH):
            x = uniform(33, 3072, scale=4, dtype=dtype)
            bias = uniform(3072, dtype=dtype)
            out = x.clone()
            ops("bias_activation", dtype_code(dtype), out, bias, activation, 33, 3072)
            want = ACTIVATIONS[activation](x.float() + bias.float())
            report("bias_activation", f"33 x 3072, {ACTIVATION_NAMES[activation]}", name_of(dtype),
                   (out.float() - want).abs(), output_tolerance(want, dtype, 1e-6))


def check_softmax_topk(ops):
    for dtype in (torch.float32, torch.float16):
        for rows, cols in ((1, 30522), (32, 30522), (7, 1000)):
            for k in (1, 5, 64):
                logits = (torch.randn(rows, cols, device=DEVICE) * 3).to(dtype)
                ids = torch.empty(rows, k, device=DEVICE, dtype=torch.int32)
                scores = torch.empty(rows, k, device=DEVICE)
                ops("softmax_topk", dtype_code(dtype), logits, rows, cols, k, ids, scores)
                # Higher first, lower column first on ties (fp16 logits tie often).
                want_ids = torch.sort(logits.float(), dim=1, descending=True, stable=True).indices[:, :k]
                want_scores = torch.softmax(logits.float().double(), dim=1).gather(1, want_ids).float()
                wrong_ids = int((ids.long() != want_ids).sum())
                score_error = (scores - want_scores).abs() / (want_scores + 1e-9)
                report("softmax_topk", f"{rows} x {cols}, k {k}: ids ({wrong_ids} differ)", name_of(dtype), wrong_ids, 0.5)
                report("softmax_topk", f"{rows} x {cols}, k {k}: scores (relative)", name_of(dtype), score_error,
                       torch.full_like(score_error, 2e-6))


def linear_reference(x, weight, bias, activation):
    y = F.linear(x.float(), weight.float(), None if bias is None else bias.float())
    return ACTIVATIONS[activation](y)


def check_own_gemms(ops):
    """The few-row kernels the tuner may pick (cuda/gemv.cu, cuda/small_gemm.cu), into fp16 and fp32."""
    for out_dtype in (torch.float16, torch.float32):
        for rows in (1, 3, 8):
            x = uniform(rows, 768, dtype=torch.float16)
            w = uniform(30522, 768, scale=0.05, dtype=torch.float16)
            b = uniform(30522, scale=0.1, dtype=out_dtype)
            out = torch.empty(rows, 30522, device=DEVICE, dtype=out_dtype)
            ops("gemv", dtype_code(out_dtype), rows, 30522, 768, x, w, b, NONE, out)
            want = linear_reference(x, w, b, NONE)
            report("gemv", f"{rows} x 30522 x 768, bias", name_of(out_dtype), (out.float() - want).abs(),
                   output_tolerance(want, out_dtype, ACCUMULATION))
        for rows, n, k, activation, tile_rows, splits in ((37, 768, 768, GELU, 16, 1), (128, 768, 3072, NONE, 64, 3),
                                                          (8, 30522, 768, NONE, 16, 1), (100, 130, 1000, TANH, 32, 5)):
            x = uniform(rows, k, dtype=torch.float16)
            w = uniform(n, k, scale=0.05, dtype=torch.float16)
            b = uniform(n, scale=0.1, dtype=out_dtype)
            out = torch.empty(rows, n, device=DEVICE, dtype=out_dtype)
            ops("small_gemm", dtype_code(out_dtype), rows, n, k, x, w, b, activation, out, tile_rows, splits)
            want = linear_reference(x, w, b, activation)
            report("small_gemm", f"{rows} x {n} x {k}, {ACTIVATION_NAMES[activation]}, tile {tile_rows}, splits {splits}",
                   name_of(out_dtype), (out.float() - want).abs(), output_tolerance(want, out_dtype, ACCUMULATION))


def check_backend_gemm(ops):
    """GemmRunner::run, as the backend calls it: cuBLASLt with its epilogues (or the epilogue kernel), tuned."""
    FP32, FP16, TF32 = 0, 1, 2
    shapes = ((128, 2304, 768, NONE, True), (128, 3072, 768, GELU, True), (128, 768, 3072, NONE, False),
              (1, 768, 768, TANH, True), (4096, 768, 768, NONE, False))
    for precision, dtype, absolute in ((FP32, torch.float32, 1e-5), (TF32, torch.float32, 3e-3),
                                       (FP16, torch.float16, ACCUMULATION)):
        for rows, n, k, activation, with_bias in shapes:
            x = uniform(rows, k, dtype=dtype)
            w = uniform(n, k, scale=0.05, dtype=dtype)
            b = uniform(n, scale=0.1, dtype=dtype) if with_bias else None
            out = torch.empty(rows, n, device=DEVICE, dtype=dtype)
            ops("gemm", precision, 0, rows, n, k, x, w, b, activation, out)
            # fp16 plans run erf GELU as cuBLASLt's tanh form (docs/decisions/0005-fp16-gelu-epilogue.md).
            applied = GELU_TANH if precision == FP16 and activation == GELU else activation
            want = linear_reference(x, w, b, applied)
            label = ACTIVATION_NAMES[activation] + (" (as gelu_tanh)" if applied != activation else "")
            report("gemm (backend)", f"{rows} x {n} x {k}, {label}{', bias' if with_bias else ''}",
                   {FP32: "fp32", TF32: "tf32", FP16: "fp16"}[precision], (out.float() - want).abs(),
                   output_tolerance(want, dtype, absolute))
    # An fp16 plan's logits: fp32 out and bias (docs/cuda.md, "fp32 logits").
    for rows in (1, 8, 128):
        x = uniform(rows, 768, dtype=torch.float16)
        w = uniform(30522, 768, scale=0.05, dtype=torch.float16)
        b = uniform(30522, scale=0.1)
        out = torch.empty(rows, 30522, device=DEVICE)
        ops("gemm", FP16, 1, rows, 30522, 768, x, w, b, NONE, out)
        want = linear_reference(x, w, b, NONE)
        report("gemm (backend)", f"{rows} x 30522 x 768, bias, into fp32 logits", "fp16 -> fp32",
               (out - want).abs(), output_tolerance(want, torch.float32, ACCUMULATION))


def main():
    if len(sys.argv) != 2:
        print(__doc__)
        return 2
    ops = Ops(sys.argv[1])
    torch.manual_seed(20261122)
    print(f"torch_ops_test on {torch.cuda.get_device_name(0)}, torch {torch.__version__}\n")
    with torch.inference_mode():
        check_embed_layernorm(ops)
        check_add_layernorm(ops)
        check_attention(ops)
        check_gather_rows(ops)
        check_mean_rows(ops)
        check_bias_activation(ops)
        check_softmax_topk(ops)
        check_own_gemms(ops)
        check_backend_gemm(ops)
    print("| op | case | dtype | max abs error | worst error / tolerance | result |")
    print("| --- | --- | --- | ---: | ---: | --- |")
    print("\n".join(rows_of_table))
    print(f"\ntorch_ops_test: {'FAILED' if failures else 'all checks passed'} ({failures} failure{'' if failures == 1 else 's'})")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
