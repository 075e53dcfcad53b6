#!/usr/bin/env python3
"""Where an open loop's slow requests fall against a periodic background task.

    STEWARD_BENCH_SERIES=/tmp/series STEWARD_BENCH_STORES=normal \
        target/release/deps/decisions-<hash> --bench
    python3 crates/steward-testkit/benches/latency_phases.py /tmp/series/normal.txt

The decisions benchmark sends one request a millisecond; request i is sent
at i ms. A task that runs every PERIOD ms (the write-ahead log's checkpoint,
25 ms) meets the same requests modulo PERIOD, so grouping requests by
i % PERIOD shows whether that task slows the requests it meets: their
median rises above the others', and the slowest 1 % gather there.
"""

import argparse


def pct(values, p):
    s = sorted(values)
    return s[min(len(s) - 1, int(len(s) * p))]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("series", nargs="+", help="files of latencies in µs, in the order sent")
    ap.add_argument("--period", type=int, default=25, help="the task's period in requests (ms)")
    ap.add_argument("--width", type=int, default=4, help="phases counted as the task's")
    args = ap.parse_args()
    for path in args.series:
        xs = [int(line) for line in open(path) if line.strip()]
        p99 = pct(xs, 0.99)
        phases = sorted(
            ((pct([x for i, x in enumerate(xs) if i % args.period == m], 0.5), m)
             for m in range(args.period)),
            reverse=True,
        )
        # The task's phases: the slowest phase and the ones after it.
        first = phases[0][1]
        near = {(first + d) % args.period for d in range(-1, args.width - 1)}
        slow = [i for i, x in enumerate(xs) if x >= p99]
        met = sum(1 for i in slow if i % args.period in near)
        rest = [x for i, x in enumerate(xs) if i % args.period not in near]
        print(
            f"{path}: {len(xs)} requests, p50 {pct(xs, 0.5)} µs, p99 {p99} µs; "
            f"median of the slowest phases {[m for m, _ in phases[:args.width]]} µs; "
            f"{met} of the {len(slow)} slowest in the {len(near)} phases around it "
            f"({100 * len(near) // args.period} % of requests); "
            f"p99 of the other requests {pct(rest, 0.99)} µs"
        )


if __name__ == "__main__":
    main()
