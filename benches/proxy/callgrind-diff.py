#!/usr/bin/env python3
"""Per-request cost of each function from two callgrind runs of N1 and N2 requests.

    callgrind-diff.py OUT_N1 OUT_N2 N1 N2 [--inclusive] [--top K]

Each function's instructions per request is (I_N2 - I_N1) / (N2 - N1), the same
difference quotient the instruction benches use for the total, so start-up, shutdown
and anything done once cancel out. Names need a build with symbols
(`cargo build --profile profiling`). Exclusive (self) cost by default; with
--inclusive, each function's cost includes its callees (so the figures overlap).
"""
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(.+?)\s*$")


def costs(path, inclusive):
    out = subprocess.run(
        ["callgrind_annotate", "--threshold=100", "--auto=no", "--show-percs=no",
         f"--inclusive={'yes' if inclusive else 'no'}", path],
        check=True, capture_output=True, text=True).stdout
    per = {}
    body = False
    for line in out.splitlines():
        if "file:function" in line:
            body = True
            continue
        m = LINE.match(line) if body else None
        if m:
            name = m.group(2)
            # Drop the object/file prefix ("/path/file.rs:") so runs of two builds match.
            name = name.split(":", 1)[1] if ":" in name and not name.startswith("<") else name
            name = re.sub(r"::h[0-9a-f]{16}$", "", re.sub(r" \[[^]]*\]$", "", name))
            per[name] = per.get(name, 0) + int(m.group(1).replace(",", ""))
    return per


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    inclusive = "--inclusive" in sys.argv
    top = 40
    if "--top" in sys.argv:
        top = int(sys.argv[sys.argv.index("--top") + 1])
        args.remove(str(top))
    if len(args) != 4:
        sys.exit(__doc__)
    a, b = costs(args[0], inclusive), costs(args[1], inclusive)
    n = int(args[3]) - int(args[2])
    rows = sorted(((b.get(k, 0) - a.get(k, 0)) / n, k) for k in set(a) | set(b))
    rows.reverse()
    total = (sum(b.values()) - sum(a.values())) / n if not inclusive else None
    if total is not None:
        print(f"{total:10.0f}  TOTAL instructions/request (exclusive sum)")
    for cost, name in rows[:top]:
        print(f"{cost:10.1f}  {name}")


if __name__ == "__main__":
    main()
