#!/usr/bin/env python3
"""Draws the paper's findings from the findings.json that `sft sweep report` writes.

Usage: scripts/plot_findings.py runs/repro/findings.json [-o FIGURE.png]

Left: every effect in percentage points (sequential - alone, dmt - multi_task, mixed - alone,
...) as its mean over seeds with the 95% interval, coloured by verdict, with the threshold it
is judged against (0, or -margin for "near" / "at least as well"). Mixing's low-data and
full-data effects are each coloured by their own half of the claim. Right: mixed - alone at
each share of the data, per ability (RQ2 against RQ1), with intervals. Writes findings.png
beside the JSON unless -o is given. Needs matplotlib (setup.sh's venv).
"""
import argparse
import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLOURS = {"reproduced": "tab:green", "not reproduced": "tab:red", "undecided": "tab:gray"}


def effects(ax, f):
    rows = []
    for c in f["claims"]:
        for r in c["rows"]:
            if "ci95" in r and r["unit"] == "points":  # a row without an interval (n < 2) is not drawn
                # Each row coloured by its own verdict (a claim's headline needs all of them).
                rows.append((f"{r['ability']}: {r['compares'].split(' (')[0]}", dict(r, verdict=r.get("low_verdict", r["verdict"]))))
            if "at_full" in r:
                rows.append((f"{r['ability']}: mixed - alone at full data", r["at_full"]))
    margin = f["thresholds"]["near_margin_points"]
    for i, (label, r) in enumerate(reversed(rows)):
        lo, hi = r["ci95"]
        ax.errorbar([r["effect"]], [i], xerr=[[r["effect"] - lo], [hi - r["effect"]]], fmt="o", capsize=4,
                    color=COLOURS.get(r["verdict"], "black"))
        ax.annotate(r["verdict"], (hi, i), xytext=(6, -3), textcoords="offset points", fontsize=8)
    ax.set_yticks(range(len(rows)))
    ax.set_yticklabels([label for label, _ in reversed(rows)], fontsize=8)
    ax.axvline(0, color="black", linewidth=0.8)
    ax.axvline(-margin, color="black", linewidth=0.8, linestyle=":", label=f"-{margin:g} points (\"near\")")
    ax.set_xlabel("effect, percentage points (mean over seeds, 95% interval)")
    ax.set_title("The paper's claims in miniature")
    ax.legend(loc="lower left", fontsize=8)


def mixing(ax, f):
    by = {}
    for r in f["mixing_by_share"]:
        by.setdefault(r["ability"], []).append(r)
    for ability, rs in sorted(by.items()):
        rs.sort(key=lambda r: r["share"])
        x = [r["share"] for r in rs]
        y = [r["effect"] for r in rs]
        err = [[r["effect"] - r["ci95"][0] for r in rs], [r["ci95"][1] - r["effect"] for r in rs]]
        ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=ability)
    ax.set_xscale("log", base=2)
    ax.axhline(0, color="black", linewidth=0.8)
    ax.set_xlabel("share of each ability's data (log scale)")
    ax.set_ylabel("mixed - alone, percentage points")
    ax.set_title("RQ2 against RQ1: does mixing help?")
    ax.legend(fontsize=8)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("findings")
    ap.add_argument("-o", "--output")
    args = ap.parse_args()
    with open(args.findings) as fh:
        f = json.load(fh)
    fig, (left, right) = plt.subplots(1, 2, figsize=(16, 6.5), gridspec_kw={"width_ratios": [1.6, 1]})
    effects(left, f)
    if f["mixing_by_share"]:
        mixing(right, f)
    else:
        right.set_axis_off()
    fig.tight_layout()
    out = args.output or os.path.join(os.path.dirname(args.findings) or ".", "findings.png")
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
