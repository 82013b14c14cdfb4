"""Per-kernel GPU times of runs replayed from CUDA graphs, from the kernel
trace kernel_trace.cpp writes (graph-profile.sh).

Unlike Nsight Compute, which serialises and replays each kernel on its own,
this sees every kernel as it runs in a replayed graph: right after its
producer, with the L2 holding what the run left there, and the gaps between
kernels. Kernels launched from graphs are split into runs where the GPU
idles longer than --gap-us; the last --runs runs of the most common kernel
count are kept. Prints, for one run: the median duration of each kernel
position (first and last 12 positions), the median run span (first start
to last end) against the sum of its kernels, the difference being the time
between kernels, that idle time by the pair of kernels around it, and
totals per kernel name.

    python3 graph_kernel_table.py TRACE.csv LABEL [--runs 100] [--gap-us 15]
"""
import statistics
import sys
from collections import Counter, OrderedDict


def short(name: str) -> str:
    name = name.replace('(anonymous namespace)::', '').removeprefix('void ').split('(')[0]
    return name if len(name) <= 70 else name[:67] + '...'


def option(flag: str, default: float) -> float:
    return float(sys.argv[sys.argv.index(flag) + 1]) if flag in sys.argv else default


def totals(items):
    """(count, sum) of the values of each key of (key, value) items, in first-seen order."""
    out = OrderedDict()
    for key, value in items:
        count, total = out.get(key, (0, 0.0))
        out[key] = (count + 1, total + value)
    return out


def kernels(path: str):
    """(start ns, end ns, name) of the kernels that ran as graph nodes, by start."""
    with open(path, newline='') as f:
        rows = [line.rstrip('\n').split(',', 3) for line in f][1:]
    return sorted((int(start), int(end), name) for start, end, node, name in rows if node == '1')


def main(path: str, label: str) -> None:
    rows = kernels(path)
    if not rows:
        print(f'{label}: no kernels launched from graphs in {path}')
        return
    gap_ns = option('--gap-us', 15) * 1000
    runs, current = [], [rows[0]]
    for previous, row in zip(rows, rows[1:]):
        if row[0] - previous[1] > gap_ns:
            runs.append(current)
            current = []
        current.append(row)
    runs.append(current)
    common = Counter(len(r) for r in runs).most_common(1)[0][0]
    runs = [r for r in runs if len(r) == common][-int(option('--runs', 100)):]
    print(f'\n### {label}: {len(runs)} runs of {common} kernels (graphs, CUPTI trace)')
    positions = [[(r[i][1] - r[i][0]) / 1000 for r in runs] for i in range(common)]
    medians = [statistics.median(p) for p in positions]
    names = [short(n) for _, _, n in runs[-1]]
    for i in list(range(min(12, common))) + list(range(max(12, common - 12), common)):
        print(f'{i:3d} {medians[i]:8.2f} us  {names[i]}')
    spans = [(r[-1][1] - r[0][0]) / 1000 for r in runs]
    sums = [sum(e - s for s, e, _ in r) / 1000 for r in runs]
    span, busy = statistics.median(spans), statistics.median(sums)
    print(f'median run span {span:.1f} us; kernels {busy:.1f} us; between kernels {span - busy:.1f} us '
          f'({(span - busy) / max(common - 1, 1):.2f} us per boundary)')
    # Idle before each kernel position, summed by (previous kernel, kernel).
    gaps = [statistics.median((r[i][0] - r[i - 1][1]) / 1000 for r in runs) for i in range(1, common)]
    per_pair = totals(zip(zip(names, names[1:]), gaps))
    print(f'{"idle before kernel, after kernel (median per boundary)":100} {"count":>5} {"total us":>9} {"mean us":>8}')
    for (before, after), (count, time) in sorted(per_pair.items(), key=lambda kv: -kv[1][1])[:12]:
        print(f'{after[:48] + " <- " + before[:48]:100} {count:5d} {time:9.1f} {time / count:8.2f}')
    per_name = totals(zip(names, medians))
    print(f'{"kernel":72} {"count":>5} {"total us":>9} {"mean us":>8}')
    for name, (count, time) in sorted(per_name.items(), key=lambda kv: -kv[1][1]):
        print(f'{name:72} {count:5d} {time:9.1f} {time / count:8.2f}')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
