#!/usr/bin/env python3
"""Independent reference for sft's LLaMA: writes random-weight checkpoints and log-probs.

A from-scratch implementation of the Hugging Face LLaMA forward pass (modeling_llama.py
semantics: RMSNorm, rotate_half rotary embeddings with rope_theta and llama3/linear
rope_scaling, grouped-query attention, SwiGLU, tied or untied lm_head), computed in
float64 with plain torch ops, and its own safetensors reader/writer (struct + json). It
shares no code with sft; sft's tests check their numbers against the fixtures it writes.

  make_reference.py fixtures [--out tests/fixtures/reference]
      writes one folder per configuration: config.json, safetensors weights (single file or
      sharded with model.safetensors.index.json; F32, BF16 or F16) and expected.json with
      id sequences and their log-probs (null first).
  make_reference.py score DIR --ids 1,5,9
      reads any HF LLaMA folder (e.g. one sft exported) and prints {"logprobs": [...]}.

Needs only torch (scripts/sft_python prints the venv Python that has it); nothing else.
"""

import argparse
import json
import math
import os
import struct
import sys

import torch

DTYPES = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64}
NAMES = {v: k for k, v in DTYPES.items()}


# ---------------------------------------------------------------------------------------
# safetensors, by hand
# ---------------------------------------------------------------------------------------

def write_safetensors(path, tensors):
    header, offset, blobs = {"__metadata__": {"format": "pt"}}, 0, []
    for name, t in tensors:
        t = t.contiguous()
        raw = t.view(torch.uint8).numpy().tobytes() if t.dtype != torch.bfloat16 else \
            t.view(torch.int16).numpy().tobytes()
        header[name] = {"dtype": NAMES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        blobs.append(raw)
    h = json.dumps(header).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8:8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        b, e = info["data_offsets"]
        raw = bytearray(data[base + b:base + e])
        dt = DTYPES[info["dtype"]]
        if dt == torch.bfloat16:
            t = torch.frombuffer(raw, dtype=torch.int16).view(torch.bfloat16) if raw else torch.empty(0, dtype=dt)
        else:
            t = torch.frombuffer(raw, dtype=dt) if raw else torch.empty(0, dtype=dt)
        out[name] = t.reshape(info["shape"]).clone()
    return out


def load_folder(d):
    cfg = json.load(open(os.path.join(d, "config.json")))
    index = os.path.join(d, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(index):
        for f in sorted(set(json.load(open(index))["weight_map"].values())):
            weights.update(read_safetensors(os.path.join(d, f)))
    else:
        weights = read_safetensors(os.path.join(d, "model.safetensors"))
    return cfg, {k: v.to(torch.float64) for k, v in weights.items()}


# ---------------------------------------------------------------------------------------
# the model, following transformers' modeling_llama.py
# ---------------------------------------------------------------------------------------

def inv_freq_of(cfg, head_dim):
    base = cfg.get("rope_theta", 10000.0)
    inv = 1.0 / (base ** (torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim))
    rs = cfg.get("rope_scaling")
    if not rs:
        return inv
    kind = rs.get("rope_type", rs.get("type"))
    if kind == "linear":
        return inv / rs["factor"]
    assert kind == "llama3", kind
    factor, low, high = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
    old = rs["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old / low, old / high
    out = []
    for f in inv.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(f)
        elif wavelen > low_wavelen:
            out.append(f / factor)
        else:
            smooth = (old / wavelen - low) / (high - low)
            out.append((1 - smooth) * f / factor + smooth * f)
    return torch.tensor(out, dtype=torch.float64)


def rotate_half(x):
    h = x.shape[-1] // 2
    return torch.cat((-x[..., h:], x[..., :h]), dim=-1)


def logprobs(cfg, w, ids):
    """log p(ids[i] | ids[<i]); entry 0 is None."""
    d, nh = cfg["hidden_size"], cfg["num_attention_heads"]
    nkv = cfg.get("num_key_value_heads", nh)
    hd = cfg.get("head_dim", d // nh)
    eps = cfg.get("rms_norm_eps", 1e-6)
    T = len(ids)

    def norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight

    angles = torch.outer(torch.arange(T, dtype=torch.float64), inv_freq_of(cfg, hd))
    emb = torch.cat((angles, angles), dim=-1)
    cos, sin = emb.cos(), emb.sin()
    x = w["model.embed_tokens.weight"][torch.tensor(ids)]
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        h = norm(x, w[p + "input_layernorm.weight"])
        q = (h @ w[p + "self_attn.q_proj.weight"].T).view(T, nh, hd).transpose(0, 1)
        k = (h @ w[p + "self_attn.k_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        v = (h @ w[p + "self_attn.v_proj.weight"].T).view(T, nkv, hd).transpose(0, 1)
        q = q * cos + rotate_half(q) * sin
        k = k * cos + rotate_half(k) * sin
        k = k.repeat_interleave(nh // nkv, dim=0)
        v = v.repeat_interleave(nh // nkv, dim=0)
        s = (q @ k.transpose(-1, -2)) / math.sqrt(hd)
        s = s.masked_fill(~causal, float("-inf"))
        a = (torch.softmax(s, dim=-1) @ v).transpose(0, 1).reshape(T, nh * hd)
        x = x + a @ w[p + "self_attn.o_proj.weight"].T
        h = norm(x, w[p + "post_attention_layernorm.weight"])
        gate = h @ w[p + "mlp.gate_proj.weight"].T
        up = h @ w[p + "mlp.up_proj.weight"].T
        x = x + (torch.nn.functional.silu(gate) * up) @ w[p + "mlp.down_proj.weight"].T
    x = norm(x, w["model.norm.weight"])
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    lp = torch.log_softmax(x @ head.T, dim=-1)
    return [None] + [lp[i - 1, ids[i]].item() for i in range(1, T)]


# ---------------------------------------------------------------------------------------
# fixtures
# ---------------------------------------------------------------------------------------

FIXTURES = [
    # name, config overrides, stored dtype, shard count
    ("mha_f32", dict(num_key_value_heads=4), "F32", 1),
    ("gqa_bf16_sharded", dict(num_key_value_heads=2), "BF16", 3),
    ("mqa_f16_tied_llama3", dict(num_key_value_heads=1, tie_word_embeddings=True, rope_theta=500000.0,
                                 rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                               "high_freq_factor": 4.0, "original_max_position_embeddings": 40}),
     "F16", 1),
]


def base_config():
    return {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 64,
            "intermediate_size": 160, "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 4,
            "vocab_size": 256, "max_position_embeddings": 128, "rms_norm_eps": 1e-5, "rope_theta": 10000.0,
            "tie_word_embeddings": False, "hidden_act": "silu", "bos_token_id": 1, "eos_token_id": 2,
            "torch_dtype": "float32"}


def param_shapes(cfg):
    d, f, v = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    nh, nkv = cfg["num_attention_heads"], cfg["num_key_value_heads"]
    hd = d // nh
    shapes = [("model.embed_tokens.weight", (v, d))]
    for layer in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{layer}."
        shapes += [(p + "input_layernorm.weight", (d,)), (p + "self_attn.q_proj.weight", (nh * hd, d)),
                   (p + "self_attn.k_proj.weight", (nkv * hd, d)), (p + "self_attn.v_proj.weight", (nkv * hd, d)),
                   (p + "self_attn.o_proj.weight", (d, nh * hd)), (p + "post_attention_layernorm.weight", (d,)),
                   (p + "mlp.gate_proj.weight", (f, d)), (p + "mlp.up_proj.weight", (f, d)),
                   (p + "mlp.down_proj.weight", (d, f))]
    shapes.append(("model.norm.weight", (d,)))
    if not cfg["tie_word_embeddings"]:
        shapes.append(("lm_head.weight", (v, d)))
    return shapes


def make_fixtures(out):
    gen = torch.Generator().manual_seed(1234)
    for name, over, dtype, shards in FIXTURES:
        cfg = base_config()
        cfg.update(over)
        cfg["torch_dtype"] = {"F32": "float32", "BF16": "bfloat16", "F16": "float16"}[dtype]
        tensors = []
        for pname, shape in param_shapes(cfg):
            if len(shape) == 1:  # norms around 1, so that they matter
                t = 1.0 + 0.2 * torch.randn(shape, generator=gen, dtype=torch.float64)
            else:  # large enough that the log-probs vary a lot across the vocabulary
                t = 0.15 * torch.randn(shape, generator=gen, dtype=torch.float64)
            tensors.append((pname, t.to(DTYPES[dtype])))
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        for f in os.listdir(d):
            os.remove(os.path.join(d, f))
        with open(os.path.join(d, "config.json"), "w") as f:
            json.dump(cfg, f, indent=2)
        if shards == 1:
            write_safetensors(os.path.join(d, "model.safetensors"), tensors)
        else:
            per = math.ceil(len(tensors) / shards)
            index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for _, t in tensors)},
                     "weight_map": {}}
            for s in range(shards):
                fname = f"model-{s + 1:05d}-of-{shards:05d}.safetensors"
                part = tensors[s * per:(s + 1) * per]
                write_safetensors(os.path.join(d, fname), part)
                for pname, _ in part:
                    index["weight_map"][pname] = fname
            with open(os.path.join(d, "model.safetensors.index.json"), "w") as f:
                json.dump(index, f, indent=2)
        # The stored (rounded) weights define the model: reload them, as sft will.
        cfg, w = load_folder(d)
        seqs = [torch.randint(0, cfg["vocab_size"], (n,), generator=gen).tolist() for n in (24, 70)]
        expected = {"sequences": [{"ids": s, "logprobs": logprobs(cfg, w, s)} for s in seqs]}
        with open(os.path.join(d, "expected.json"), "w") as f:
            json.dump(expected, f)
        print(f"wrote {d}", file=sys.stderr)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    fx = sub.add_parser("fixtures")
    fx.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "tests", "fixtures", "reference"))
    sc = sub.add_parser("score")
    sc.add_argument("dir")
    sc.add_argument("--ids", required=True)
    args = ap.parse_args()
    torch.set_num_threads(1)
    if args.cmd == "fixtures":
        make_fixtures(args.out)
    else:
        cfg, w = load_folder(args.dir)
        print(json.dumps({"logprobs": logprobs(cfg, w, [int(x) for x in args.ids.split(",")])}))


if __name__ == "__main__":
    main()
