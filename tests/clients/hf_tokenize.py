#!/usr/bin/env python3
"""The Hugging Face `tokenizers` side of tests/data/hf_tokenizer_test.cpp.

Subcommands (each exits 1 with a message on stderr when it cannot do its job):

  encode TOKENIZER.json TEXTS.jsonl [TOKENIZER.json TEXTS.jsonl ...]
      Tokenizer.from_file(TOKENIZER) on every line of TEXTS (each line a JSON string), one
      JSON object per text on stdout, in order:
        {"job": J, "ids": encode(text, add_special_tokens=False).ids,
         "ids_special": encode(text, add_special_tokens=True).ids,
         "decoded": decode(ids, skip_special_tokens=False),
         "decoded_skip": decode(ids_special, skip_special_tokens=True)}
      J counts the (TOKENIZER, TEXTS) pairs from 0. A tokenizer that fails to load, or a text
      that fails to encode, gives {"job": J, "error": "..."} instead.
  train-qwen OUT.json CORPUS...
      Trains a small Qwen2-style byte-level BPE (vocab 2000) on every string in the CORPUS
      files (JSON or JSONL) and saves it to OUT: NFC normalizer, Qwen2's Split regex then
      ByteLevel(add_prefix_space=False, use_regex=False), ByteLevel decoder and post-processor,
      ChatML special tokens <|endoftext|>, <|im_start|>, <|im_end|>, and three non-special
      added tokens exercising normalized=True, lstrip and rstrip.
  unicode-sets
      Prints src/data/hf_unicode_sets.cpp: the code points that `tokenizers`' regex engine
      (Oniguruma) matches with \\s, \\p{L} and \\p{N}, and those whose NFC utf8proc knows but
      tokenizers' older Unicode tables do not, as ranges.
"""
import json
import os
import sys

SCRIPTS = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "scripts")


def fail(msg):
    print("hf_tokenize.py: " + msg, file=sys.stderr)
    sys.exit(1)


def read_texts(path):
    texts = []
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            text = json.loads(line)
            if not isinstance(text, str):
                fail(f"{path}:{n}: expected a JSON string")
            texts.append(text)
    return texts


def cmd_encode(args):
    from tokenizers import Tokenizer

    if not args or len(args) % 2:
        fail("encode: expected TOKENIZER.json TEXTS.jsonl pairs")
    out = sys.stdout
    for job in range(len(args) // 2):
        tok_path, texts_path = args[2 * job], args[2 * job + 1]
        texts = read_texts(texts_path)
        try:
            tok = Tokenizer.from_file(tok_path)
        except Exception as e:  # the C++ side expects a refusal for some files: report, go on
            for _ in texts:
                out.write(json.dumps({"job": job, "error": f"load: {e}"}) + "\n")
            continue
        for text in texts:
            try:
                ids = tok.encode(text, add_special_tokens=False).ids
                ids_special = tok.encode(text, add_special_tokens=True).ids
                rec = {"job": job, "ids": ids, "ids_special": ids_special,
                       "decoded": tok.decode(ids, skip_special_tokens=False),
                       "decoded_skip": tok.decode(ids_special, skip_special_tokens=True)}
            except Exception as e:
                rec = {"job": job, "error": f"encode: {e}"}
            out.write(json.dumps(rec) + "\n")


def cmd_train_qwen(args):
    from tokenizers import AddedToken, pre_tokenizers, trainers

    sys.path.insert(0, SCRIPTS)
    from make_tiny_qwen_tokenizer import corpus_texts, qwen_bpe  # the shipped Qwen tokenizer's pipeline

    if len(args) < 2:
        fail("train-qwen: expected OUT.json CORPUS...")
    texts = corpus_texts(args[1:])
    if not texts:
        fail("train-qwen: the corpus holds no strings")
    tok = qwen_bpe()
    trainer = trainers.BpeTrainer(vocab_size=2000, min_frequency=2, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  special_tokens=["<|endoftext|>"])
    tok.train_from_iterator(texts, trainer=trainer)
    tok.add_special_tokens(["<|im_start|>", "<|im_end|>"])
    tok.add_tokens([
        AddedToken("<tool_call>", special=False, normalized=False),
        AddedToken("caf\u00e9", special=False, normalized=True),  # matched after NFC
        AddedToken("[MASK]", special=False, normalized=False, lstrip=True, rstrip=True),
    ])
    tok.save(args[0])
    print(json.dumps({"vocab_size": tok.get_vocab_size(with_added_tokens=True), "texts": len(texts)}))


def char_ranges(pattern, chars):
    """Code points of `chars` that Split(Regex(pattern), "removed") removes, in order."""
    from tokenizers import Regex, pre_tokenizers

    split = pre_tokenizers.Split(Regex(pattern), behavior="removed")
    kept = set()
    step = 1 << 16
    for i in range(0, len(chars), step):
        for piece, _ in split.pre_tokenize_str("".join(chars[i:i + step])):
            kept.update(piece)
    return [ord(c) for c in chars if c not in kept]


def nfc_unknown(chars):
    """Code points whose NFC utf8proc knows but tokenizers' NFC does not (its Unicode tables are
    older), so that tokenizers treats them as unassigned: those on which the two disagree alone,
    after U+0345 (ccc 240), before U+0316 (ccc 220), after "a", or decomposed; and the parts of
    a composition tokenizers does not make that tokenizers never composes with anything."""
    import ctypes
    from tokenizers import normalizers

    lib = ctypes.CDLL("libutf8proc.so.2")
    libc = ctypes.CDLL("libc.so.6")
    lib.utf8proc_map.restype = ctypes.c_ssize_t
    lib.utf8proc_map.argtypes = [ctypes.c_char_p, ctypes.c_ssize_t, ctypes.POINTER(ctypes.c_void_p), ctypes.c_int]
    stable, compose, decompose = 1 << 1, 1 << 3, 1 << 4

    def utf8proc(text, options):
        data = text.encode()
        out = ctypes.c_void_p()
        n = lib.utf8proc_map(data, len(data), ctypes.byref(out), options)
        if n < 0:
            fail(f"utf8proc_map failed on {text!r}")
        result = ctypes.string_at(out, n).decode()
        libc.free(out)
        return result

    def nfc_u(text):
        return utf8proc(text, stable | compose)

    nfc_t = normalizers.NFC().normalize_str
    unknown = set()
    decomposed = {}
    for c in chars:
        nfd = utf8proc(c, stable | decompose)
        if nfd != c:
            decomposed[c] = nfd
        probes = [c, "\u0345" + c, c + "\u0316", "a" + c, nfd]
        if any(nfc_t(p) != nfc_u(p) for p in probes):
            unknown.add(c)
    composites = {c: d for c, d in decomposed.items() if nfc_u(d) == c}  # utf8proc composes d back
    uncomposed = {c for c, d in composites.items() if nfc_t(d) != c}  # ... and tokenizers does not
    for c in uncomposed:
        for part in composites[c]:
            if all(part not in d or nfc_t(d) == d for d in composites.values()):
                unknown.add(part)  # tokenizers composes it with nothing: to it, unassigned
    return sorted(unknown)


def as_ranges(code_points):
    ranges = []
    for cp in code_points:
        if ranges and ranges[-1][1] == cp - 1:
            ranges[-1][1] = cp
        else:
            ranges.append([cp, cp])
    return ranges


def cmd_unicode_sets(args):
    import tokenizers

    chars = [chr(c) for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    sets = [
        ("kWhiteSpace", "white_space", "\\s", as_ranges(char_ranges(r"\s", chars))),
        ("kLetter", "letter", "\\p{L}", as_ranges(char_ranges(r"\p{L}", chars))),
        ("kNumber", "number", "\\p{N}", as_ranges(char_ranges(r"\p{N}", chars))),
        ("kNfcUnknown", "nfc_unknown", "NFC-unknown", as_ranges(ord(c) for c in nfc_unknown(chars))),
    ]
    print("// Generated by `python tests/clients/hf_tokenize.py unicode-sets > src/data/hf_unicode_sets.cpp`")
    print(f"// with tokenizers {tokenizers.__version__}. Do not edit by hand: the tests")
    print("// (HfTokenizer.RegexClassesAndNfcMatchTokenizersOnEveryCodePoint) check these sets against tokenizers.")
    print('#include "data/hf_unicode_sets.h"')
    print()
    print("namespace sft::data::hf {")
    print("namespace {")
    print()
    for name, _, label, ranges in sets:
        print(f"// {label}: {sum(hi - lo + 1 for lo, hi in ranges)} code points in {len(ranges)} ranges.")
        print(f"constexpr CodePointRange {name}[] = {{")
        line = "   "
        for lo, hi in ranges:
            item = f" {{0x{lo:X}, 0x{hi:X}}},"
            if len(line) + len(item) > 110:
                print(line)
                line = "   "
            line += item
        print(line)
        print("};")
        print()
    print("}  // namespace")
    print()
    for name, fn, _, _ in sets:
        print(f"std::span<const CodePointRange> {fn}_ranges() {{ return {name}; }}")
    print()
    print("}  // namespace sft::data::hf")


def main():
    if len(sys.argv) < 2:
        fail("usage: hf_tokenize.py encode|train-qwen|unicode-sets ...")
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "encode":
        cmd_encode(args)
    elif cmd == "train-qwen":
        cmd_train_qwen(args)
    elif cmd == "unicode-sets":
        cmd_unicode_sets(args)
    else:
        fail("unknown subcommand " + repr(cmd))


if __name__ == "__main__":
    main()
