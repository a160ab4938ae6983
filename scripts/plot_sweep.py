#!/usr/bin/env python3
"""Draws a sweep's figures from the report.json that `sft sweep report` writes.

Usage: scripts/plot_sweep.py OUTPUT_DIR/report.json [-o FIGURE.png] [--title T]

Two kinds of figure, chosen from the sweep's axes:
  scaling     an axis varies a data amount (datasets.*.fraction): score against the number
              of training records on a log axis, one line per ability, mean +- std over
              seeds, with the log-linear fit score = a + b ln(records) that the report made.
  comparison  any other axis (strategy, strategy.k): grouped bars per ability, mean +- std.
Needs python3-matplotlib (Debian). Writes OUTPUT_DIR/<sweep>.png unless -o is given.
"""
import argparse
import json
import math
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def scaling(ax, rep):
    for ability in rep["abilities"]:
        pts = [(g["records"][ability], 100 * g["mean"][ability], 100 * g["std"][ability])
               for g in rep["groups"] if g["records"].get(ability, 0) > 0 and ability in g["mean"]]
        if len({p[0] for p in pts}) < 2:
            continue  # this ability's data amount did not vary in the sweep
        pts.sort()
        x, y, e = zip(*pts)
        line = ax.errorbar(x, y, yerr=e, marker="o", capsize=3, label=ability)
        fit = rep["fits"].get(ability)
        if fit:
            xs = [min(x) * (max(x) / min(x)) ** (i / 50) for i in range(51)]
            r2 = fit["r2"]
            ax.plot(xs, [100 * (fit["a"] + fit["b"] * math.log(v)) for v in xs], "--",
                    color=line[0].get_color(), alpha=0.6,
                    label=f"{ability} fit, R²={r2:.2f}" if r2 is not None else f"{ability} fit")
    ax.set_xscale("log")
    ax.set_xlabel("training records of the ability (log scale)")
    ax.set_ylabel("score (%)")


def comparison(ax, rep):
    axes = rep["group_axes"]
    labels = [" ".join(str(g[a]) for a in axes) for g in rep["groups"]]
    abilities = rep["abilities"]
    width = 0.8 / max(1, len(abilities))
    for i, ability in enumerate(abilities):
        xs = [j + (i - (len(abilities) - 1) / 2) * width for j in range(len(labels))]
        ax.bar(xs, [100 * g["mean"].get(ability, 0) for g in rep["groups"]], width,
               yerr=[100 * g["std"].get(ability, 0) for g in rep["groups"]], capsize=3, label=ability)
    ax.set_xticks(range(len(labels)))
    ax.set_xticklabels(labels, rotation=20)
    ax.set_xlabel(", ".join(axes))
    ax.set_ylabel("score (%)")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("report")
    ap.add_argument("-o", "--output")
    ap.add_argument("--title")
    args = ap.parse_args()
    with open(args.report) as f:
        rep = json.load(f)
    if not rep.get("groups"):
        sys.exit(f"{args.report}: no finished runs to plot")
    fig, ax = plt.subplots(figsize=(7, 4.5))
    if any(a.endswith(".fraction") for a in rep["group_axes"]):
        scaling(ax, rep)
    else:
        comparison(ax, rep)
    n = max(g["seeds"] for g in rep["groups"])
    ax.set_title(args.title or f"{rep['sweep']}: mean ± std over {n} seed(s)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    out = args.output or os.path.join(os.path.dirname(os.path.abspath(args.report)), rep["sweep"] + ".png")
    fig.savefig(out, dpi=120)
    print(out)


if __name__ == "__main__":
    main()
