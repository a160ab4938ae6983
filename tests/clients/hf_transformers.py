#!/usr/bin/env python3
"""The Hugging Face transformers side of tests/clients/transformers_test.cpp.

Subcommands (each prints one JSON object on stdout, or exits 1 with a message on stderr):

  score DIR --ids 1,5,9 [--dtype float32|bfloat16]
      AutoModelForCausalLM.from_pretrained(DIR) and log p(id_i | ids_<i) per position, in the
      shape `sft score` prints: {"logprobs": [null, ...]}, plus what the load reported.
  save DIR --dtype float32|bfloat16 [--arch llama|qwen2|qwen3] [--kv-heads N] [--tied]
       [--rope-theta X] [--llama3-scaling] [--vocab-size V] [--max-shard-size 40KB] [--seed S]
       --ids 1,5,9
      LlamaForCausalLM(LlamaConfig(tiny)) (or Qwen2ForCausalLM, Qwen3ForCausalLM with head_dim
      24, not hidden/heads = 16).save_pretrained(DIR), then `score DIR --ids` on it (in
      float32) plus the saved config.json; with a non-default rope, also the log-probs of the
      same weights under the default rope.
  generate DIR --ids 1,5,9 --max-new-tokens N
      Greedy model.generate (KV cache on, as transformers defaults; no stop token) from the
      prompt ids: {"tokens": [the N new ids]}.
  chat DIR --question Q [--question Q ...] --max-new-tokens N
      AutoTokenizer and AutoModelForCausalLM from DIR, as a user chats with a model folder: each
      question as one user turn through the folder's chat template (apply_chat_template with the
      generation prompt), greedy generate with the folder's generation_config.json (its EOS ids
      stop it): {"answers": [{"prompt", "tokens", "text"}], "eos_token_id": ...}.
  tokenize DIR --input F.jsonl
      AutoTokenizer.from_pretrained(DIR) on each {"text": ...} line of F, and, for the same
      texts, BOS + sentencepiece's ids from DIR/tokenizer.model.
"""
import argparse
import json
import os
import sys


def fail(msg):
    print("hf_transformers.py: " + msg, file=sys.stderr)
    sys.exit(1)


def quiet_torch():
    import torch

    torch.set_num_threads(1)
    return torch


def parse_ids(s):
    try:
        return [int(x) for x in s.split(",")]
    except ValueError:
        fail("--ids: expected comma-separated integers, got " + repr(s))


def dtype_of(name):
    torch = quiet_torch()
    return {"float32": torch.float32, "bfloat16": torch.bfloat16}[name]


def load(model_dir, dtype_name):
    import transformers

    model, info = transformers.AutoModelForCausalLM.from_pretrained(
        model_dir, dtype=dtype_of(dtype_name), output_loading_info=True
    )
    return model.eval(), info


def logprobs(model, ids):
    torch = quiet_torch()
    with torch.no_grad():
        logits = model(torch.tensor([ids], dtype=torch.long)).logits[0]
    # The log-softmax is taken in float64 of the model's own logits.
    logp = torch.log_softmax(logits.to(torch.float64), dim=-1)
    return [None] + [logp[i - 1, ids[i]].item() for i in range(1, len(ids))]


def score(model_dir, ids, dtype_name):
    import transformers

    if len(ids) < 2:
        fail("--ids: give at least two ids")
    model, info = load(model_dir, dtype_name)
    return {
        "logprobs": logprobs(model, ids),
        "ids": ids,
        "class": type(model).__name__,
        "param_dtype": str(next(model.parameters()).dtype).replace("torch.", ""),
        "missing_keys": sorted(info.get("missing_keys", [])),
        "unexpected_keys": sorted(info.get("unexpected_keys", [])),
        "mismatched_keys": sorted(str(k) for k in info.get("mismatched_keys", [])),
        "error_msgs": [str(e) for e in info.get("error_msgs", [])],
        "rope_theta": model.config.rope_parameters.get("rope_theta"),
        "rope_type": model.config.rope_parameters.get("rope_type"),
        "tie_word_embeddings": bool(model.config.tie_word_embeddings),
        "model_type": model.config.model_type,
        "num_parameters": model.num_parameters(),
        "transformers": transformers.__version__,
    }


def cmd_score(a):
    print(json.dumps(score(a.model, parse_ids(a.ids), a.dtype)))


def tiny_config(a, rope):
    import transformers

    common = dict(vocab_size=a.vocab_size, hidden_size=64, intermediate_size=176, num_hidden_layers=2,
                  num_attention_heads=4, num_key_value_heads=a.kv_heads, max_position_embeddings=256,
                  rms_norm_eps=1e-5, rope_parameters=rope, tie_word_embeddings=a.tied,
                  initializer_range=0.1, bos_token_id=1, eos_token_id=2)
    if a.arch == "qwen2":
        return transformers.Qwen2Config(**common, use_sliding_window=False), transformers.Qwen2ForCausalLM
    if a.arch == "qwen3":
        return transformers.Qwen3Config(**common, head_dim=24, attention_bias=False), transformers.Qwen3ForCausalLM
    return transformers.LlamaConfig(**common), transformers.LlamaForCausalLM


def cmd_save(a):
    torch = quiet_torch()

    rope = {"rope_type": "default", "rope_theta": a.rope_theta}
    if a.llama3_scaling:
        # Llama 3.1's scaling, with an original context short enough to matter at 64 positions.
        rope = {"rope_type": "llama3", "rope_theta": a.rope_theta, "factor": 8.0, "low_freq_factor": 1.0,
                "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
    cfg, cls = tiny_config(a, rope)
    torch.manual_seed(a.seed)
    model = cls(cfg)
    with torch.no_grad():
        # Norm weights other than 1 and biases other than 0 (HF's init), so a norm or bias
        # that is skipped or misread changes the logits.
        for name, p in model.named_parameters():
            if name.endswith("norm.weight"):
                p.uniform_(0.5, 1.5)
            elif name.endswith(".bias"):
                p.uniform_(-0.5, 0.5)
    model = model.to(dtype_of(a.dtype))
    model.save_pretrained(a.model, max_shard_size=a.max_shard_size)
    files = sorted(os.listdir(a.model))
    saved = json.load(open(os.path.join(a.model, "config.json")))
    ids = parse_ids(a.ids)
    out = score(a.model, ids, "float32")
    out["files"] = files
    out["saved_config"] = saved
    if rope["rope_type"] != "default" or a.rope_theta != 10000.0:
        # The same weights under the default rope (theta 10000, no scaling): shows that the
        # rope settings change these log-probs, so reading them wrongly cannot go unnoticed.
        import copy

        model, _ = load(a.model, "float32")
        plain = copy.deepcopy(model.config)
        plain.rope_parameters = {"rope_type": "default", "rope_theta": 10000.0}
        model.model.rotary_emb = type(model.model.rotary_emb)(config=plain)
        out["logprobs_with_default_rope"] = logprobs(model, ids)
    print(json.dumps(out))


def cmd_generate(a):
    torch = quiet_torch()
    import transformers

    model, _ = load(a.model, "float32")
    ids = parse_ids(a.ids)
    # Greedy, exactly max_new_tokens: no stop token (EOS may be the argmax like any id).
    gen = transformers.GenerationConfig(do_sample=False, max_new_tokens=a.max_new_tokens, min_new_tokens=0,
                                        eos_token_id=None, pad_token_id=0, use_cache=True)
    with torch.no_grad():
        out = model.generate(torch.tensor([ids], dtype=torch.long), generation_config=gen)
    print(json.dumps({"tokens": out[0, len(ids):].tolist(), "class": type(model).__name__}))


def cmd_chat(a):
    torch = quiet_torch()
    import transformers

    tok = transformers.AutoTokenizer.from_pretrained(a.model)
    model = transformers.AutoModelForCausalLM.from_pretrained(a.model, dtype=torch.float32)
    model.eval()
    gen = transformers.GenerationConfig.from_pretrained(a.model)
    gen.do_sample, gen.max_new_tokens = False, a.max_new_tokens
    answers = []
    for q in a.question:
        prompt = tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
        ids = tok(prompt, add_special_tokens=False, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            out = model.generate(ids, attention_mask=torch.ones_like(ids), generation_config=gen)
        new = out[0, ids.shape[1]:].tolist()
        answers.append({"prompt": prompt, "tokens": new, "text": tok.decode(new, skip_special_tokens=True)})
    print(json.dumps({"answers": answers, "eos_token_id": gen.eos_token_id, "class": type(model).__name__}))


def cmd_tokenize(a):
    quiet_torch()
    import sentencepiece
    import transformers

    texts = []
    with open(a.input, encoding="utf-8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)["text"])
    tok = transformers.AutoTokenizer.from_pretrained(a.model)
    sp = sentencepiece.SentencePieceProcessor(model_file=os.path.join(a.model, "tokenizer.model"))
    print(json.dumps({
        "class": type(tok).__name__,
        "bos_token_id": tok.bos_token_id,
        "eos_token_id": tok.eos_token_id,
        "unk_token_id": tok.unk_token_id,
        "ids": [tok(t)["input_ids"] for t in texts],
        "sentencepiece": [[sp.bos_id()] + sp.encode(t) for t in texts],
        "transformers": transformers.__version__,
    }))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("score")
    s.add_argument("model")
    s.add_argument("--ids", required=True)
    s.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32")
    s.set_defaults(fn=cmd_score)
    s = sub.add_parser("save")
    s.add_argument("model")
    s.add_argument("--dtype", choices=["float32", "bfloat16"], required=True)
    s.add_argument("--arch", choices=["llama", "qwen2", "qwen3"], default="llama")
    s.add_argument("--kv-heads", type=int, default=2)
    s.add_argument("--vocab-size", type=int, default=512)
    s.add_argument("--tied", action="store_true")
    s.add_argument("--rope-theta", type=float, default=10000.0)
    s.add_argument("--llama3-scaling", action="store_true")
    s.add_argument("--max-shard-size", default="40KB")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--ids", required=True)
    s.set_defaults(fn=cmd_save)
    s = sub.add_parser("chat")
    s.add_argument("model")
    s.add_argument("--question", action="append", required=True)
    s.add_argument("--max-new-tokens", type=int, required=True)
    s.set_defaults(fn=cmd_chat)
    s = sub.add_parser("generate")
    s.add_argument("model")
    s.add_argument("--ids", required=True)
    s.add_argument("--max-new-tokens", type=int, required=True)
    s.set_defaults(fn=cmd_generate)
    s = sub.add_parser("tokenize")
    s.add_argument("model")
    s.add_argument("--input", required=True)
    s.set_defaults(fn=cmd_tokenize)
    a = p.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # everything is local: never reach for the Hub
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    a.fn(a)


if __name__ == "__main__":
    main()
