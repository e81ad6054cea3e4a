#!/usr/bin/env python3
"""Splits a benchmark run's client CPU samples by part (docs/performance.md, *The driver's
request path, split*).

    perf record -F 1999 --call-graph dwarf,16384 -o t.data rdlock-bench --scenario S1 --adapters tokio --runs 1
    perf script -i t.data -F comm,ip,sym > t.txt
    crates/rdlock-bench/perf-split.py t.txt s.txt ...

Each client sample goes to the innermost frame of a crate that owns it (so a driver function's
standard-library calls, its mutexes and copies, count as the driver's); the counts are given
per sample of the server's, whose work per cycle is the same for every adapter.
"""

import collections
import re
import sys

OWNER = re.compile(
    r"^<?&?(rdlock_\w+|redis|tokio|async_\w+|combine|polling|mio|concurrent_queue|futures_util|tokio_util|std::net)::"
)
PARTS = [
    ("driver, async path (aio/*)", r"rdlock_driver::aio|deadlines|permits"),
    ("driver, engine calls (cell.rs, common.rs)", r"rdlock_driver::(cell|common)"),
    ("driver, conversion (convert.rs, exchange.rs)", r"rdlock_driver::(convert|exchange)"),
    ("driver, other", r"rdlock_driver"),
    ("engine (rdlock-core)", r"rdlock_core"),
    ("the benchmark's loop", r"rdlock_bench"),
    ("redis crate (codec, parser)", r"redis|combine"),
    ("runtime, socket I/O, kernel", r"tokio|mio|async_|polling|concurrent_queue|std::net|futures_util|tokio_util"),
]
REST = "unattributed (kernel, libc)"


def samples(path):
    """(command, frames innermost first) per sample of `perf script -F comm,ip,sym`."""
    current = None
    with open(path, errors="replace") as f:
        for line in f:
            if not line.strip():
                if current:
                    yield current
                current = None
            elif not line[0].isspace():
                current = (line.split()[0], [])
            elif current is not None:
                parts = line.strip().split(" ", 1)
                if len(parts) == 2:
                    current[1].append(parts[1])
    if current:
        yield current


def split(path):
    server, client, parts = 0, 0, collections.Counter()
    for comm, frames in samples(path):
        if comm == "redis-server":
            server += 1
            continue
        client += 1
        part = REST
        for frame in frames:
            if OWNER.search(frame.lstrip("<")) or OWNER.search(frame):
                part = next((name for name, p in PARTS if re.search(p, frame)), "other")
                break
        parts[part] += 1
    return max(server, 1), client, parts


def main():
    runs = [(p, *split(p)) for p in sys.argv[1:]]
    print("| part (per server sample) | " + " | ".join(p for p, *_ in runs) + " |")
    print("|---|" + "--:|" * len(runs))
    for name in [n for n, _ in PARTS] + [REST, "other"]:
        print(f"| {name} | " + " | ".join(f"{parts[name] / server:.3f}" for _, server, _, parts in runs) + " |")
    print("| client samples per server sample | " + " | ".join(f"{c / s:.3f}" for _, s, c, _ in runs) + " |")


if __name__ == "__main__":
    main()
