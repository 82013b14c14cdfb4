"""Summarises an `ncu --csv --page raw --metrics gpu__time_duration.sum` log of
kernel-profile.js: the first and last kernels of the last run (the run
starts at the last embedding kernel), then totals per kernel name. Used by kernel-profile.sh."""
import csv
import sys
from collections import OrderedDict


def short(name: str) -> str:
    name = name.split('(')[0]
    return name if len(name) <= 70 else name[:67] + '...'


def main(path: str, label: str) -> None:
    with open(path, newline='') as f:
        lines = [line for line in f if line.startswith('"')]
    rows = list(csv.DictReader(lines))
    rows = [r for r in rows if r.get('gpu__time_duration.sum', '').replace('.', '', 1).replace(',', '').isdigit()]
    if not rows:
        print(f'{label}: no kernels in {path}')
        return
    starts = [i for i, r in enumerate(rows) if 'embed_layernorm' in r['Kernel Name']]
    run = rows[starts[-1]:] if starts else rows
    print(f'\n### {label}: {len(run)} kernels in the last run')
    total = 0.0
    per_name = OrderedDict()
    for i, r in enumerate(run):
        us = float(r['gpu__time_duration.sum'].replace(',', '')) / 1000.0
        total += us
        name = short(r['Kernel Name'])
        count, time = per_name.get(name, (0, 0.0))
        per_name[name] = (count + 1, time + us)
        if i < 12 or i >= len(run) - 8:
            print(f'{i:3d} {us:8.2f} us  grid {r["Grid Size"]:>14} block {r["Block Size"]:>12}  {name}')
    print(f'... sum of kernel durations {total:.1f} us')
    print(f'{"kernel":72} {"count":>5} {"total us":>9} {"mean us":>8}')
    for name, (count, time) in sorted(per_name.items(), key=lambda kv: -kv[1][1]):
        print(f'{name:72} {count:5d} {time:9.1f} {time / count:8.2f}')


if __name__ == '__main__':
    main(sys.argv[1], sys.argv[2])
