#!/usr/bin/env python3
"""Per-actor heap by call site, from two valgrind massif profiles of awake actors.

Usage: actor-heap-diff.py SMALL.massif LARGE.massif ACTORS_BETWEEN [DEPTH]

Each profile's last snapshot must be detailed (massif --detailed-freq=1) and taken while the
actors are awake (scripts/actor-heap.sh arranges both). The difference between the two, divided
by the number of actors between them, is what one more awake actor costs; it is grouped by the
SQLite function chain for SQLite's allocations and by the first DEPTH Rust frames of roost,
fjall, rusqlite and tokio for the rest. Prints bytes per actor, largest first.
"""
import re
import sys
from collections import defaultdict

NODE = re.compile(r"^( *)n(\d+): (\d+) (.*)$")


def last_detailed(path):
    snapshots = open(path).read().split("#-----------\nsnapshot=")
    detailed = [s for s in snapshots[1:] if "heap_tree=detailed" in s or "heap_tree=peak" in s]
    if not detailed:
        sys.exit(f"{path}: no detailed snapshot (run massif with --detailed-freq=1)")
    return detailed[-1]


def leaves(snapshot):
    """Bytes of every leaf of the allocation tree, keyed by its stack (root first)."""
    stack, out = [], defaultdict(int)
    for line in snapshot.split("\n"):
        m = NODE.match(line)
        if not m:
            continue
        depth, children, size = len(m.group(1)), int(m.group(2)), int(m.group(3))
        stack = stack[:depth] + [re.sub(r"0x[0-9A-F]+: ", "", m.group(4))]
        if children == 0:
            out[tuple(stack)] += size
    return out


def site(stack, depth):
    frames = [f.split(" (")[0] for f in stack[1:]]
    if frames and frames[0].startswith("sqlite3Mem"):
        sqlite = [f for f in frames if f.startswith(("sqlite3", "pcache", "allocate", "btree", "fts"))]
        return "SQLite: " + " < ".join(sqlite[2:6])
    ours = [f for f in frames if any(k in f for k in ("roost", "fjall", "lsm_tree", "rusqlite", "tokio"))]
    return " < ".join(ours[:depth]) or "other: " + " < ".join(frames[:4])


def main():
    small, large, between = sys.argv[1], sys.argv[2], float(sys.argv[3])
    depth = int(sys.argv[4]) if len(sys.argv) > 4 else 3
    by_site = defaultdict(float)
    for sign, path in ((-1, small), (1, large)):
        for stack, size in leaves(last_detailed(path)).items():
            by_site[site(stack, depth)] += sign * size / between
    total = sum(by_site.values())
    sqlite = sum(v for k, v in by_site.items() if k.startswith("SQLite"))
    print(f"per awake actor: {total:.0f} B requested, SQLite {sqlite:.0f} B, the rest {total - sqlite:.0f} B")
    for name, size in sorted(by_site.items(), key=lambda kv: -kv[1]):
        if abs(size) >= 40:
            print(f"{size:8.0f}  {name[:200]}")


if __name__ == "__main__":
    main()
