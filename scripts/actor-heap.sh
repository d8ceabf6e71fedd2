#!/bin/sh
# What one more awake reference actor costs on the heap, by call site: runs the heap probe
# (crates/roost-bench, awake_actor_heap_probe) under valgrind's massif with 200 and 1,200
# actors, then scripts/actor-heap-diff.py on the two profiles. Debug build; takes a few minutes.
set -eu
cd "$(dirname "$0")/.."
test_binary=$(cargo test -p roost-bench --lib --no-run --message-format=json 2>/dev/null |
    python3 -c 'import json,sys
for l in sys.stdin:
    m = json.loads(l)
    if m.get("reason") == "compiler-artifact" and m["target"]["name"] == "roost_bench" and m.get("executable"):
        print(m["executable"])')
out=${TMPDIR:-/tmp}
for n in 200 1200; do
    ROOST_PROBE_ACTORS=$n valgrind --tool=massif --massif-out-file="$out/actor-heap.$n" --threshold=0.1 \
        --depth=40 --detailed-freq=1 --max-snapshots=60 --time-unit=B \
        "$test_binary" --ignored awake_actor_heap_probe --nocapture 2>&1 | grep '^probe:'
done
python3 scripts/actor-heap-diff.py "$out/actor-heap.200" "$out/actor-heap.1200" 1000 "${1:-3}"
