#!/usr/bin/env python3
"""Plots a run's loss curve per stage (and the learning rate) from its metrics.jsonl to PNG.

Usage: scripts/plot_metrics.py RUN_DIR [RUN_DIR ...] [-o loss.png]
Several runs go on one figure (e.g. the four strategies). Needs python3-matplotlib.
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def load(run):
    steps = []
    with open(os.path.join(run, "metrics.jsonl")) as f:
        for line in f:
            try:
                j = json.loads(line)
            except json.JSONDecodeError:
                continue
            if j.get("event") == "step":
                steps.append(j)
    return steps


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("runs", nargs="+")
    ap.add_argument("-o", "--out", default=None, help="PNG path (default: RUN_DIR/loss.png)")
    args = ap.parse_args()
    fig, (ax, axlr) = plt.subplots(2, 1, figsize=(9, 6.5), sharex=True, gridspec_kw={"height_ratios": [3, 1]})
    for run in args.runs:
        steps = load(run)
        if not steps:
            print(f"{run}: no step records in metrics.jsonl", file=sys.stderr)
            continue
        name = os.path.basename(os.path.normpath(run))
        stages = []
        for s in steps:
            if not stages or stages[-1][0] != s["stage"]:
                stages.append((s["stage"], []))
            stages[-1][1].append(s)
        for stage, pts in stages:
            ax.plot([p["step"] for p in pts], [p["loss"] for p in pts], label=f"{name}: {stage}")
        axlr.plot([s["step"] for s in steps], [s["lr"] for s in steps], label=name)
        for stage, pts in stages[1:]:
            ax.axvline(pts[0]["step"], color="grey", lw=0.5, ls=":")
    ax.set_ylabel("loss (per trained token)")
    ax.set_yscale("log")
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    axlr.set_ylabel("lr")
    axlr.set_xlabel("optimizer step")
    axlr.grid(alpha=0.3)
    out = args.out or os.path.join(args.runs[0], "loss.png")
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    print(out)


if __name__ == "__main__":
    main()
