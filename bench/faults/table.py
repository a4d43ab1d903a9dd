#!/usr/bin/env python3
"""Turns the fault suite's runs (one JSON object a line, from tests/nemesis) into the
results table of docs/reliability.md, hamon and keepalived side by side, and writes it
between the file's "results" markers."""
import json
import statistics
import sys
from collections import OrderedDict

MARKERS = "results"


def takeover(rs):
    times = [r.get("takeover_ms") for r in rs]
    if all(t is None for t in times):
        return "-"
    if any(t is None for t in times):
        return "none in {} of {}".format(sum(t is None for t in times), len(times))
    return str(max(times))


def cell(runs, f):
    return f(runs) if runs else "n/a"


def demoted(rs):
    times = [r.get("demoted_ms") for r in rs]
    if all(t is None for t in times):
        return "-"
    if any(t is None for t in times):
        return "kept in {} of {}".format(sum(t is None for t in times), len(times))
    return "{}-{}".format(min(times), max(times))


def main(src, doc, markers=MARKERS):
    begin, end_marker = f"<!-- {markers}:begin -->", f"<!-- {markers}:end -->"
    with_demoted = markers != MARKERS
    groups = OrderedDict()
    for line in open(src):
        line = line.strip()
        if not line:
            continue
        r = json.loads(line)
        key = (r["fault"], r["hold_ms"])
        groups.setdefault(key, {"hamon": [], "keepalived": []})[r["peer"]].append(r)

    def both(g, f):
        return f"{cell(g['hamon'], f)} / {cell(g['keepalived'], f)}"

    extra = " primary's VIP gone after, ms |" if with_demoted else ""
    rows = [
        "| fault | hold | runs | dual-active windows (longest ms) | client outage, worst ms "
        "| false failovers | takeover after a kill, worst ms | converged after heal, worst ms "
        "| one active at the end |" + extra,
        "|---|---|---|---|---|---|---|---|---|" + ("---|" if with_demoted else ""),
    ]
    for (fault, hold), g in groups.items():
        tail = " {} |".format(both(g, demoted)) if with_demoted else ""
        rows.append(
            ("| {} | {} s | {} | {} | {} | {} | {} | {} | {} |" + tail).format(
                fault,
                hold // 1000,
                both(g, lambda rs: str(len(rs))),
                both(g, lambda rs: "{} ({})".format(
                    sum(r["dual_windows"] for r in rs), max(r["dual_longest_ms"] for r in rs))),
                both(g, lambda rs: str(max(r["outage_ms"] for r in rs))),
                both(g, lambda rs: str(sum(r["false_failovers"] for r in rs))),
                both(g, lambda rs: takeover(rs)),
                both(g, lambda rs: str(max(r["converge_ms"] for r in rs))),
                both(g, lambda rs: "{}/{}".format(
                    sum(1 for r in rs if r["settled"] and not r["exits"] and not r["panics"]),
                    len(rs))),
            )
        )
    table = "\n".join(rows)
    text = open(doc).read()
    start, end = text.index(begin) + len(begin), text.index(end_marker)
    open(doc, "w").write(text[:start] + "\n" + table + "\n" + text[end:])
    print(table)


if __name__ == "__main__":
    main(*sys.argv[1:4])
