#!/usr/bin/env python3
"""Writes data/tiny/qwen/: a Qwen-style tokenizer trained on the shipped tiny data, for the tiny
Qwen3 DMT run (configs/tiny/dmt_qwen.yaml).

  scripts/make_tiny_qwen_tokenizer.py [OUT_DIR]     (default data/tiny/qwen; needs `tokenizers`,
                                                     the venv of scripts/setup.sh has it)

The tokenizer is built as Qwen2/Qwen3's is: a byte-level BPE, NFC, Qwen's Split regex (digits one
at a time) then ByteLevel without a prefix space, no BOS, and the ChatML special tokens
<|endoftext|>, <|im_start|>, <|im_end|> (plus Qwen3's <think> and </think> as non-special added
tokens); 1024 ids in all, the tiny model's vocabulary. Beside tokenizer.json it writes what a Qwen
folder carries: tokenizer_config.json (eos <|im_end|>, pad <|endoftext|>, no BOS) and
generation_config.json (generation stops on <|im_end|> and <|endoftext|>). Training is
deterministic for the same data and `tokenizers` version (0.23.3 made the shipped files).
"""
import glob
import json
import os
import sys

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

QWEN_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
VOCAB = 1024


def strings(value, out):
    if isinstance(value, str):
        out.append(value)
    elif isinstance(value, list):
        for v in value:
            strings(v, out)
    elif isinstance(value, dict):
        for v in value.values():
            strings(v, out)


def corpus_texts(paths):
    """Every string in the JSON or JSONL files `paths`, in order (also used by
    tests/clients/hf_tokenize.py)."""
    texts = []
    for path in paths:
        with open(path, encoding="utf-8") as f:
            if path.endswith(".jsonl"):
                for line in f:
                    if line.strip():
                        strings(json.loads(line), texts)
            else:
                strings(json.load(f), texts)
    return texts


def qwen_bpe():
    """An untrained byte-level BPE with Qwen2/Qwen3's pipeline: NFC, Qwen's Split regex, then
    ByteLevel without a prefix space; ByteLevel decoder and post-processor (also used by
    tests/clients/hf_tokenize.py)."""
    tok = Tokenizer(models.BPE())
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(QWEN_PATTERN), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
    ])
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    return tok


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "data", "tiny", "qwen")
    texts = corpus_texts(sorted(glob.glob(os.path.join(root, "data", "tiny", "*_train.json*"))))
    tok = qwen_bpe()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 2, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), special_tokens=SPECIAL)
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_tokens([AddedToken("<think>", special=False, normalized=False),
                    AddedToken("</think>", special=False, normalized=False)])
    if tok.get_vocab_size(with_added_tokens=True) > VOCAB:
        sys.exit(f"the tokenizer has {tok.get_vocab_size(with_added_tokens=True)} ids, more than the model's {VOCAB}")
    os.makedirs(out, exist_ok=True)
    tok.save(os.path.join(out, "tokenizer.json"))
    ids = {t: tok.token_to_id(t) for t in SPECIAL}
    with open(os.path.join(out, "tokenizer_config.json"), "w", encoding="utf-8") as f:
        json.dump({"tokenizer_class": "Qwen2Tokenizer", "bos_token": None, "eos_token": "<|im_end|>",
                   "pad_token": "<|endoftext|>", "model_max_length": 512, "add_prefix_space": False}, f, indent=2)
        f.write("\n")
    with open(os.path.join(out, "generation_config.json"), "w", encoding="utf-8") as f:
        json.dump({"eos_token_id": [ids["<|im_end|>"], ids["<|endoftext|>"]], "pad_token_id": ids["<|endoftext|>"]},
                  f, indent=2)
        f.write("\n")
    print(json.dumps({"out": out, "vocab_size": tok.get_vocab_size(with_added_tokens=True), "texts": len(texts),
                      "special_ids": ids}))


if __name__ == "__main__":
    main()
