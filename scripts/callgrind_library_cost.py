#!/usr/bin/env python3
"""The library's own instructions per invocation, from a callgrind profile of
bench-function (see tests/benches/function_cpu.rs, FUNCTION_CPU_WRAPPER).

Sums the inclusive cost of every call edge from code outside the library into
a `lambda_xray*` function: deterministic, unlike traced minus untraced totals,
whose tokio share varies by a few thousand instructions between runs.

  FUNCTION_CPU_MODES=traced FUNCTION_CPU_INVOCATIONS=3000 FUNCTION_CPU_WARMUP=200 \\
    FUNCTION_CPU_WRAPPER="valgrind --tool=callgrind --callgrind-out-file=/tmp/cg.%m" \\
    cargo bench -p lambda-xray-e2e --bench function_cpu
  scripts/callgrind_library_cost.py /tmp/cg.traced 3200   # warm-up + measured invocations
"""
import collections
import re
import sys


def main() -> None:
    path = sys.argv[1]
    invocations = float(sys.argv[2]) if len(sys.argv) > 2 else 3200.0
    names: dict[str, str] = {}

    def name(value: str) -> str:
        # Callgrind's name compression: "(id) name" the first time, "(id)" after.
        m = re.match(r"\((\d+)\)(?: (.*))?", value)
        if not m:
            return value
        if m.group(2) is not None:
            names[m.group(1)] = m.group(2)
        return names.get(m.group(1), m.group(1))

    caller = callee = None
    pending = False
    edges: collections.Counter = collections.Counter()
    with open(path) as f:
        for line in f:
            line = line.rstrip("\n")
            if line.startswith("fn="):
                caller = name(line[3:])
            elif line.startswith("cfn="):
                callee = name(line[4:])
            elif line.startswith("calls="):
                pending = True
            elif pending and line and (line[0].isdigit() or line[0] in "+-*"):
                # The line after `calls=`: position(s), then the call's inclusive cost.
                edges[(caller, callee)] += int(line.split()[-1])
                pending = False

    def library(n: str) -> bool:
        return "lambda_xray" in n

    into = collections.Counter()
    for (a, b), cost in edges.items():
        if library(b) and not library(a):
            into[b] += cost
    print(f"library instructions per invocation: {sum(into.values()) / invocations:.0f}")
    for fn, cost in into.most_common(12):
        print(f"  {cost / invocations:8.0f}  {fn[:140]}")


if __name__ == "__main__":
    main()
