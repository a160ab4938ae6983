#!/usr/bin/env python3
"""The Hugging Face `tokenizers` side of bench/tokenize_bench.cpp: single-threaded encode
throughput on the same texts.

  tokenize_bench.py TOKENIZER.json TEXTS.jsonl --reps N

Tokenizer.from_file, then encode(text, add_special_tokens=False) one text at a time (each line
of TEXTS a JSON string), N passes over all texts; prints one JSON object: tokens and bytes per
pass and the seconds of each pass. Run it with TOKENIZERS_PARALLELISM=false and
RAYON_NUM_THREADS=1 (tokenize_bench.cpp sets both).
"""
import argparse
import json
import time

from tokenizers import Tokenizer


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("tokenizer")
    ap.add_argument("texts")
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args()
    with open(args.texts, encoding="utf-8") as f:
        texts = [json.loads(line) for line in f if line.strip()]
    tok = Tokenizer.from_file(args.tokenizer)
    seconds, tokens = [], 0
    for _ in range(args.reps):
        start = time.perf_counter()
        tokens = 0
        for text in texts:
            tokens += len(tok.encode(text, add_special_tokens=False).ids)
        seconds.append(time.perf_counter() - start)
    print(json.dumps({"texts": len(texts), "tokens": tokens, "bytes": sum(len(t.encode()) for t in texts),
                      "seconds": seconds}))


if __name__ == "__main__":
    main()
