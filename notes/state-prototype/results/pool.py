#!/usr/bin/env python3
"""Pools the raw CSVs of several invocations: median ns/record over all
rounds, min-max, the median of each invocation, x native (per round, the
baseline's ns / the design's ns) and the split medians."""
import collections, csv, statistics as st, sys

files = sys.argv[1:] or ["run1-raw.csv", "run2-raw.csv"]
base = {"NativeWindow": "NativeWindow", "C": "NativeWindow"}
by = collections.defaultdict(dict)
for inv, f in enumerate(files):
    for r in csv.DictReader(open(f)):
        by[(inv, r["round"], r["dist"])][r["design"]] = r
out = collections.defaultdict(list)
for (inv, _, dist), d in by.items():
    for des, r in d.items():
        b = d[base.get(des, "Native")]
        ns = float(r["ns_per_record"])
        out[(dist, des)].append((ns, float(b["ns_per_record"]) / ns, [float(r[x]) for x in ("pre", "call", "post", "fire")], inv))
order = ["Native", "Stateless", "AOverlay", "AUndo", "AAt", "AReplayOverlay", "AReplayUndo", "B", "NativeWindow", "C"]
print("| design | distribution | ns/record median | min-max | median per invocation | x native median (min-max) | pre / call / post / fire |")
print("|---|---|---|---|---|---|---|")
for dist in sorted({k[0] for k in out}):
    for des in order:
        v = out.get((dist, des))
        if not v:
            continue
        ns = [x[0] for x in v]
        xs = [x[1] for x in v]
        meds = " / ".join(f"{st.median([x[0] for x in v if x[3] == i]):.0f}" for i in range(len(files)))
        parts = " / ".join(f"{st.median([x[2][j] for x in v]):.0f}" for j in range(4))
        print(f"| {des} | {dist} | {st.median(ns):.0f} | {min(ns):.0f}-{max(ns):.0f} | {meds} | {st.median(xs):.2f} ({min(xs):.2f}-{max(xs):.2f}) | {parts} |")
