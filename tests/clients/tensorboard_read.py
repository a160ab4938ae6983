#!/usr/bin/env python3
"""Reads an sft run's TensorBoard events with TensorBoard's own EventAccumulator and checks
them against the run's metrics.jsonl.

  tensorboard_read.py RUN_DIR

Expected scalars, from RUN_DIR/metrics.jsonl: each "step" line gives train/loss,
train/lr, train/grad_norm and train/tokens_per_s at its step; each "eval" line with a
numeric summary.score gives eval/<benchmark> at its step. RUN_DIR/tensorboard must hold
exactly these tags with exactly these (step, value) pairs, values equal at float32, and
nothing else (no other tags, no images, histograms, tensors or graphs). Prints
{"tags": {tag: count read}, "metrics_tags", "event_files", "file_version", "scalars",
"problems"} as JSON; exits 1 with the list of differences otherwise.
"""
import json
import math
import os
import sys

import numpy as np
from tensorboard.backend.event_processing import event_accumulator as ea

TRAIN_TAGS = {"loss": "train/loss", "lr": "train/lr", "grad_norm": "train/grad_norm",
              "tokens_per_s": "train/tokens_per_s"}


def fail(msg):
    print("tensorboard_read: " + msg, file=sys.stderr)
    sys.exit(1)


def f32(v):
    """A metrics.jsonl number as the float32 TensorBoard stores (null: a non-finite value)."""
    return float(np.float32(float("nan") if v is None else v))


def expected_scalars(metrics_path):
    want = {}
    with open(metrics_path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            rec = json.loads(line)
            if rec.get("event") == "step":
                for key, tag in TRAIN_TAGS.items():
                    if key not in rec:
                        fail(f"{metrics_path}:{n}: step line without {key!r}")
                    want.setdefault(tag, []).append((rec["step"], f32(rec[key])))
            elif rec.get("event") == "eval":
                score = rec.get("summary", {}).get("score")
                if isinstance(score, (int, float)) and not isinstance(score, bool):
                    want.setdefault("eval/" + rec["benchmark"], []).append((rec["step"], f32(score)))
    return want


def same(a, b):
    return (math.isnan(a) and math.isnan(b)) or a == b


def main():
    if len(sys.argv) != 2:
        fail("usage: tensorboard_read.py RUN_DIR")
    run = sys.argv[1]
    metrics, tb_dir = os.path.join(run, "metrics.jsonl"), os.path.join(run, "tensorboard")
    for p in (metrics, tb_dir):
        if not os.path.exists(p):
            fail(p + " does not exist")
    event_files = sorted(f for f in os.listdir(tb_dir) if "tfevents" in f)
    if not event_files:
        fail(tb_dir + ": no event files")
    want = expected_scalars(metrics)
    if not want:
        fail(metrics + ": no scalars logged")

    # size_guidance 0: keep every event (the default samples scalars down to 10000).
    acc = ea.EventAccumulator(tb_dir, size_guidance={ea.SCALARS: 0, ea.TENSORS: 0, ea.HISTOGRAMS: 0,
                                                     ea.IMAGES: 0, ea.AUDIO: 0, ea.COMPRESSED_HISTOGRAMS: 0})
    acc.Reload()
    tags = acc.Tags()
    problems = []
    for kind, found in tags.items():
        if kind != ea.SCALARS and found:
            problems.append(f"unexpected {kind}: {found}")
    got_tags = set(tags[ea.SCALARS])
    for t in sorted(got_tags - set(want)):
        problems.append(f"tag {t} is in TensorBoard but not in metrics.jsonl")
    for t in sorted(set(want) - got_tags):
        problems.append(f"tag {t} ({len(want[t])} values in metrics.jsonl) is missing from TensorBoard")
    total = 0
    counts = {}
    for t in sorted(got_tags & set(want)):
        got = [(e.step, e.value) for e in acc.Scalars(t)]
        total += len(got)
        counts[t] = len(got)
        if len(got) != len(want[t]):
            problems.append(f"{t}: {len(got)} events in TensorBoard, {len(want[t])} in metrics.jsonl")
        for (gs, gv), (ws, wv) in zip(got, want[t]):
            if gs != ws or not same(gv, wv):
                problems.append(f"{t}: TensorBoard has step {gs} = {gv!r}, metrics.jsonl step {ws} = {wv!r}")
    if acc.file_version != 2.0:
        problems.append(f"file_version {acc.file_version!r}, expected 2.0 (brain.Event:2)")
    report = {"tags": counts, "metrics_tags": {t: len(v) for t, v in sorted(want.items())},
              "event_files": len(event_files),
              "file_version": acc.file_version, "scalars": total, "problems": problems}
    print(json.dumps(report, indent=1))
    if problems:
        fail(f"{len(problems)} differences:\n  " + "\n  ".join(problems[:40]))


if __name__ == "__main__":
    main()
