"""The GPU check's checks (scripts/gpu_check.sh): each reads what a step wrote, prints one line,
appends one record {"check", "ok", "value", "limit", "detail"} to a JSON-lines file, and exits
non-zero when the check misses. `summary` turns the records into the table and summary.json.

Needs only the standard library and torch (the machine's own python may have nothing else):
safetensors files are read with a small reader of their own.
"""
import argparse
import json
import struct
import sys


def record(out, check, ok, value, limit, detail=""):
    rec = {"check": check, "ok": bool(ok), "value": value, "limit": limit, "detail": detail}
    with open(out, "a") as f:
        f.write(json.dumps(rec) + "\n")
    print(f"{'PASS' if ok else 'FAIL'}  {check}: {value} (limit {limit}){'  ' + detail if detail else ''}")
    return 0 if ok else 1


def jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def steps(metrics):
    return [r for r in jsonl(metrics) if r.get("event") == "step"]


def read_safetensors(path):
    import torch
    dtypes = {"F32": torch.float32, "BF16": torch.bfloat16, "F16": torch.float16, "I64": torch.int64}
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        a, b = e["data_offsets"]
        t = torch.frombuffer(bytearray(data[a:b]), dtype=dtypes[e["dtype"]]) if b > a else torch.empty(0)
        out[name] = t.reshape(e["shape"]).float()
    return out


def model_tensors(folder):
    import glob
    import os
    tensors = {}
    for p in sorted(glob.glob(os.path.join(folder, "*.safetensors"))):
        tensors.update(read_safetensors(p))
    return tensors


# ---- the checks ---------------------------------------------------------------------------------

def steps_match(a):
    """bf16 on the device against fp32 on the CPU: loss at steps 1 and 2 (the second after one
    AdamW update, the fused kernel's on a GPU) and the first gradient norm."""
    ref, dev = steps(a.reference), steps(a.device)
    worst, parts = 0.0, []
    for i, key in ((0, "loss"), (1, "loss"), (0, "grad_norm")):
        x, y = ref[i][key], dev[i][key]
        rel = abs(x - y) / abs(x)
        worst = max(worst, rel / (a.tol_loss if key == "loss" else a.tol_grad))
        parts.append(f"step {i + 1} {key} {x:.5f} vs {y:.5f} ({rel:.4f})")
    return record(a.record, a.name, worst <= 1.0, round(worst, 3), 1.0,
                  f"worst share of its tolerance (loss {a.tol_loss}, grad {a.tol_grad}): " + "; ".join(parts))


def scores_match(a):
    """Per-token log-probs of the same ids: the device's bf16 against the CPU's fp32."""
    ref, dev = [json.loads(l)["logprobs"] for l in open(a.reference)], [json.loads(l)["logprobs"] for l in open(a.device)]
    diffs = [abs(x - y) for r, d in zip(ref, dev) for x, y in zip(r, d) if x is not None]
    mean = sum(diffs) / len(diffs)
    ok = len(ref) == len(dev) and mean <= a.tol_mean and max(diffs) <= a.tol_max
    return record(a.record, a.name, ok, round(mean, 4), a.tol_mean,
                  f"mean |delta log p| over {len(diffs)} tokens; max {max(diffs):.4f} (limit {a.tol_max})")


def files_equal(a):
    same = open(a.reference, "rb").read() == open(a.device, "rb").read()
    return record(a.record, a.name, same, "equal" if same else "different", "equal", f"{a.reference} vs {a.device}")


def memory_phases(a):
    """Every phase the trainer measured against the plan it reported (metrics.jsonl "memory")."""
    mem = [r for r in jsonl(a.metrics) if r.get("event") == "memory"][-1]
    worst, parts = 0.0, []
    for phase, planned in mem["planned"].items():
        for rank, measured in enumerate(mem["measured"]):
            if phase not in measured or planned <= 0:
                continue
            rel = abs(measured[phase] / planned - 1.0)
            worst = max(worst, rel)
            parts.append(f"{phase}: planned {planned / 2**20:.0f} MiB, measured {measured[phase] / 2**20:.0f}")
    return record(a.record, a.name, bool(parts) and worst <= a.tol, round(worst, 3), a.tol, "; ".join(parts))


def weights_equal(a):
    """Every tensor of each run's exported model within `tol` of the reference's."""
    ref = model_tensors(a.reference)
    worst, parts = 0.0, []
    for run in a.runs:
        got = model_tensors(run)
        d = max((ref[k] - got[k]).abs().max().item() for k in ref)
        worst = max(worst, d)
        parts.append(f"{run.rstrip('/').split('/')[-2]}: {d:.2e}")
    return record(a.record, a.name, worst <= a.tol, f"{worst:.2e}", a.tol, "; ".join(parts))


def tiny_dmt(a):
    """The run went over a group of the backend and finished; its scores were computed."""
    log = open(a.log).read()
    summary = json.load(open(a.scores))["summary"]
    value = {k: round(v["score"], 4) for k, v in summary.items()}
    group = f"{a.backend} backend" in log
    ok = group and "done:" in log and set(value) == {"math", "code", "general"}
    return record(a.record, a.name, ok, value, f"scores, over a one-rank {a.backend} group",
                  "" if group else "the log never names the group's backend")


def mfu(a):
    j = json.loads(open(a.bench).read().strip().splitlines()[-1])
    value = j.get("mfu")
    if value is None:
        return record(a.record, a.name, j["tokens_per_s"] > 0, f"{j['tokens_per_s']:.0f} tokens/s", "> 0",
                      "no MFU on the CPU (no peak given)")
    detail = f"{j['tokens_per_s']:.0f} tokens/s, {j['achieved_gflops']:.0f} GFLOP/s; aim {a.aim}"
    if a.other:
        o = json.loads(open(a.other).read().strip().splitlines()[-1])
        detail += f"; without prefetch {o.get('mfu', 0):.3f}"
    return record(a.record, a.name, value >= a.floor, round(value, 3), a.floor, detail)


def trace_overlap(a):
    """A collective running while a compute kernel runs, on another stream (GPU) or thread (CPU)."""
    ev = [e for e in json.load(open(a.trace))["traceEvents"] if e.get("ph") == "X" and "dur" in e]
    gpu = any(e.get("cat") == "kernel" for e in ev)
    if gpu:
        coll = [e for e in ev if e.get("cat") == "kernel" and "nccl" in e["name"].lower()]
        comp = [e for e in ev if e.get("cat") == "kernel" and "nccl" not in e["name"].lower()
                and any(k in e["name"].lower() for k in ("gemm", "cutlass", "sm80", "sm90", "xmma", "matmul"))]
        where = lambda e: e.get("args", {}).get("stream", e.get("tid"))
    else:
        coll = [e for e in ev if e["name"].startswith("gloo:")]
        comp = [e for e in ev if e["name"] in ("aten::mm", "aten::addmm", "aten::bmm", "aten::matmul")]
        where = lambda e: e.get("tid")
    n = sum(1 for c in coll for k in comp
            if where(c) != where(k) and c["ts"] < k["ts"] + k["dur"] and k["ts"] < c["ts"] + c["dur"])
    return record(a.record, a.name, n > 0, n, "> 0",
                  f"{len(coll)} collectives, {len(comp)} {'GEMM kernels' if gpu else 'matrix multiplies'}, "
                  f"{n} overlapping pairs")


def make_hf_model(a):
    """A tiny LLaMA saved in bf16 as transformers saves it (sharded safetensors + index + config),
    by transformers when the python has it, else in the same layout by this script (said so)."""
    import os
    import torch
    cfg = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 256,
           "intermediate_size": 688, "num_hidden_layers": 4, "num_attention_heads": 4, "num_key_value_heads": 2,
           "vocab_size": 1024, "max_position_embeddings": 512, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
           "tie_word_embeddings": False, "torch_dtype": "bfloat16", "bos_token_id": 1, "eos_token_id": 2}
    torch.manual_seed(0)
    try:
        from transformers import LlamaConfig, LlamaForCausalLM
        m = LlamaForCausalLM(LlamaConfig(**cfg)).to(torch.bfloat16)
        m.save_pretrained(a.dir, max_shard_size="1MB", safe_serialization=True)
        print(f"{a.dir}: saved by transformers {__import__('transformers').__version__}")
        return 0
    except ImportError:
        pass
    # Without transformers: HF's parameter names and init scale, shards of about 1 MB, the index.
    D, F, L, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["num_hidden_layers"], cfg["vocab_size"]
    K = D // cfg["num_attention_heads"] * cfg["num_key_value_heads"]
    shapes = [("model.embed_tokens.weight", (V, D))]
    for l in range(L):
        p = f"model.layers.{l}."
        shapes += [(p + "input_layernorm.weight", (D,)), (p + "self_attn.q_proj.weight", (D, D)),
                   (p + "self_attn.k_proj.weight", (K, D)), (p + "self_attn.v_proj.weight", (K, D)),
                   (p + "self_attn.o_proj.weight", (D, D)), (p + "post_attention_layernorm.weight", (D,)),
                   (p + "mlp.gate_proj.weight", (F, D)), (p + "mlp.up_proj.weight", (F, D)),
                   (p + "mlp.down_proj.weight", (D, F))]
    shapes += [("model.norm.weight", (D,)), ("lm_head.weight", (V, D))]
    tensors = [(n, torch.ones(s) if len(s) == 1 else torch.randn(s) * 0.02) for n, s in shapes]
    shards, cur, size = [], [], 0
    for n, t in tensors:
        if cur and size + t.numel() * 2 > 1 << 20:
            shards.append(cur)
            cur, size = [], 0
        cur.append((n, t.to(torch.bfloat16)))
        size += t.numel() * 2
    shards.append(cur)
    os.makedirs(a.dir, exist_ok=True)
    weight_map = {}
    for i, shard in enumerate(shards):
        fname = f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors"
        header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
        for n, t in shard:
            raw = t.contiguous().view(torch.uint8).reshape(-1)
            try:
                b = raw.numpy().tobytes()
            except (ImportError, RuntimeError):  # a torch without numpy
                b = bytes(raw.tolist())
            header[n] = {"dtype": "BF16", "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
            blobs.append(b)
            off += len(b)
            weight_map[n] = fname
        h = json.dumps(header).encode()
        h += b" " * ((8 - (len(h) + 8) % 8) % 8)
        with open(os.path.join(a.dir, fname), "wb") as f:
            f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))
    json.dump({"metadata": {}, "weight_map": weight_map}, open(os.path.join(a.dir, "model.safetensors.index.json"), "w"))
    json.dump(cfg, open(os.path.join(a.dir, "config.json"), "w"), indent=1)
    print(f"{a.dir}: written in transformers' layout by this script (no transformers in this python)")
    return 0


def summary(a):
    recs = jsonl(a.record)
    failed = [r for r in recs if not r["ok"]]
    width = max(len(r["check"]) for r in recs) if recs else 10
    print(f"\n{'check'.ljust(width)}  result  value (limit)")
    for r in recs:
        print(f"{r['check'].ljust(width)}  {'PASS' if r['ok'] else 'FAIL'}    {r['value']} ({r['limit']})")
    info = json.load(open(a.env)) if a.env else {}
    with open(a.out, "w") as f:
        json.dump({"env": info, "checks": recs, "passed": len(recs) - len(failed), "failed": len(failed),
                   "seconds": a.seconds}, f, indent=1)
    print(f"{len(recs) - len(failed)} of {len(recs)} checks passed in {a.seconds} s; {a.out}")
    return 1 if failed or not recs else 0


def main():
    p = argparse.ArgumentParser()
    sub = p.add_subparsers(dest="cmd", required=True)
    def add(name, fn, *args):
        s = sub.add_parser(name)
        s.add_argument("--record", required=True)
        s.add_argument("--name", default=name)
        for arg, kw in args:
            s.add_argument(arg, **kw)
        s.set_defaults(fn=fn)
    add("steps-match", steps_match, ("--reference", {}), ("--device", {}), ("--tol-loss", {"type": float}),
        ("--tol-grad", {"type": float}))
    add("scores-match", scores_match, ("--reference", {}), ("--device", {}), ("--tol-mean", {"type": float}),
        ("--tol-max", {"type": float}))
    add("files-equal", files_equal, ("--reference", {}), ("--device", {}))
    add("memory-phases", memory_phases, ("--metrics", {}), ("--tol", {"type": float}))
    add("weights-equal", weights_equal, ("--reference", {}), ("--runs", {"nargs": "+"}), ("--tol", {"type": float}))
    add("tiny-dmt", tiny_dmt, ("--log", {}), ("--scores", {}), ("--backend", {}))
    add("mfu", mfu, ("--bench", {}), ("--floor", {"type": float}), ("--aim", {"type": float}), ("--other", {}))
    add("trace-overlap", trace_overlap, ("--trace", {}))
    add("summary", summary, ("--out", {}), ("--env", {}), ("--seconds", {"type": int, "default": 0}))
    m = sub.add_parser("make-hf-model")
    m.add_argument("dir")
    m.set_defaults(fn=make_hf_model)
    a = p.parse_args()
    try:
        sys.exit(a.fn(a))
    except (OSError, KeyError, IndexError, ValueError, StopIteration) as e:  # a step that left nothing to check
        if a.cmd in ("summary", "make-hf-model"):
            raise
        sys.exit(record(a.record, a.name, False, "missing", "-", f"{type(e).__name__}: {e}"))


if __name__ == "__main__":
    main()
