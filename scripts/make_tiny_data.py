#!/usr/bin/env python3
"""Writes sft's shipped synthetic skills under data/tiny/ and trains their tokenizer.

Three skills, each in the exact format of the real dataset it stands for, so that the
same readers, templates and scorers serve both (Dong et al. 2024 use GSM8K, Code Alpaca
and ShareGPT):

  math     GSM8K jsonl  {question, answer}: 1-2 step arithmetic word problems whose
           answers show their work with <<a+b=c>> calculator annotations and end in
           "#### N". The numbers are small (sums to about 45, one-digit subtrahends,
           the times table), so the pretrained base can know the arithmetic and
           fine-tuning teaches it to read the problem and lay out the steps; accuracy
           keeps rising with more data (the paper's log-linear math curve).
  code     Code Alpaca json {instruction, input, output} for training, and a HumanEval
           jsonl test split {task_id, prompt, canonical_solution, test, entry_point}
           scored by executing check(candidate). The docstring says in words what the
           body must compute, with constants and operations drawn at random, so more
           data keeps helping.
  general  ShareGPT json {id, conversations: [{from, value}]}: multi-turn chat whose
           answers are exactly checkable (greetings, repeat/upper/lower-case requests,
           polite refusals, thanks). A few patterns, so a little data saturates it,
           as general chat ability does in the paper.

Everything is drawn from random.Random(SEED): the files are identical on every run.
Usage: scripts/make_tiny_data.py [--out data/tiny] [--no-tokenizer]
"""

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile

SEED = 20240801

MATH_TRAIN, MATH_TEST = 6144, 300
CODE_TRAIN, CODE_TEST = 4096, 164
GENERAL_TRAIN, GENERAL_TEST = 2048, 200
VOCAB_SIZE = 1024

NAMES = ["Ava", "Ben", "Cara", "Dan", "Eli", "Fay", "Gus", "Hana", "Ian", "Jo", "Kai", "Lea", "Max", "Nia",
         "Omar", "Pia", "Raj", "Sam", "Tia", "Uma", "Vic", "Wes", "Yara", "Zoe", "Liam", "Emma", "Noah",
         "Mia", "Leo", "Ivy"]
HE = {n: ("she" if n in {"Ava", "Cara", "Fay", "Hana", "Jo", "Lea", "Nia", "Pia", "Tia", "Uma", "Yara", "Zoe",
                          "Emma", "Mia", "Ivy"} else "he") for n in NAMES}
ITEMS = ["apples", "pens", "books", "cards", "coins", "eggs", "stamps", "shells", "marbles", "stickers",
         "cookies", "flowers", "toys", "beads", "rocks", "cups", "hats", "socks", "balls", "kites"]
CONTAINERS = ["boxes", "bags", "packs", "jars", "crates", "baskets"]
SINGULAR = {"boxes": "box", "bags": "bag", "packs": "pack", "jars": "jar", "crates": "crate", "baskets": "basket"}
WORDS = ["river", "cloud", "stone", "light", "green", "music", "paper", "table", "window", "garden",
         "forest", "silver", "orange", "yellow", "winter", "summer", "happy", "quiet", "simple", "bright",
         "ocean", "planet", "rocket", "pencil", "butter", "coffee", "candle", "island", "mirror", "pocket",
         "rabbit", "dragon", "violin", "basket", "bridge", "castle", "dinner", "engine", "flower", "guitar",
         "hammer", "jacket", "ladder", "market", "needle", "orbit", "puzzle", "robot", "saddle", "tunnel",
         "velvet", "wagon", "zebra", "anchor", "beacon", "cactus", "dolphin", "falcon", "glacier", "harbor"]
HARMFUL = ["steal a car", "break into a house", "make a weapon", "hack a bank", "cheat on a test",
           "hurt someone", "forge a passport", "pick a lock to rob a store"]


def cap(s):
    return s[0].upper() + s[1:]


# ---------------------------------------------------------------------------------------
# math: GSM8K format
# ---------------------------------------------------------------------------------------

def calc(a, op, b):
    r = {"+": a + b, "-": a - b, "*": a * b}[op]
    return r, f"{a}{op}{b} = <<{a}{op}{b}={r}>>{r}"


def math_problem(rng):
    name = rng.choice(NAMES)
    other = rng.choice([n for n in NAMES if n != name])
    he = HE[name]
    item = rng.choice(ITEMS)
    kind = rng.randrange(6)
    if kind == 0:
        a, b = rng.randint(2, 30), rng.randint(2, 16)
        r, s = calc(a, "+", b)
        q = f"{name} has {a} {item}. {cap(he)} gets {b} more {item}. How many {item} does {name} have now?"
        steps = [f"{name} has {s} {item} now."]
    elif kind == 1:
        a = rng.randint(10, 30)
        b = rng.randint(2, 9)
        r, s = calc(a, "-", b)
        q = f"{name} had {a} {item} and gave {b} of them to {other}. How many {item} does {name} have left?"
        steps = [f"{name} has {s} {item} left."]
    elif kind == 2:
        c = rng.choice(CONTAINERS)
        a, b = rng.randint(2, 9), rng.randint(2, 9)
        r, s = calc(a, "*", b)
        q = f"There are {a} {c} with {b} {item} in each. How many {item} are there in total?"
        steps = [f"There are {s} {item} in total."]
    elif kind == 3:
        c = rng.choice(CONTAINERS)
        a = rng.randint(2, 20)
        n, k = rng.randint(2, 4), rng.randint(2, 4)
        r1, s1 = calc(n, "*", k)
        r, s2 = calc(a, "+", r1)
        q = (f"{name} has {a} {item}. {cap(he)} buys {n} {c} of {item} with {k} {item} in each {SINGULAR[c]}. "
             f"How many {item} does {name} have now?")
        steps = [f"{cap(he)} buys {s1} {item}.", f"{name} has {s2} {item} now."]
    elif kind == 4:
        a = rng.randint(15, 30)
        b = rng.randint(2, 9)
        c = rng.randint(2, 9)
        r1, s1 = calc(a, "-", b)
        r, s2 = calc(r1, "+", c)
        q = (f"{name} has {a} {item}. {cap(he)} gives {b} to {other} and then finds {c} more. "
             f"How many {item} does {name} have?")
        steps = [f"After giving some away, {name} has {s1} {item}.", f"After finding more, {he} has {s2} {item}."]
    else:
        p, h = rng.randint(2, 9), rng.randint(2, 9)
        r1, s1 = calc(p, "*", h)
        spend = rng.randint(1, min(9, r1 - 1))
        r, s2 = calc(r1, "-", spend)
        q = (f"{name} earns ${p} per hour and works for {h} hours. {cap(he)} spends ${spend} on lunch. "
             f"How many dollars does {name} have left?")
        steps = [f"{name} earns {s1} dollars.", f"{cap(he)} has {s2} dollars left."]
    return {"question": q, "answer": "\n".join(steps) + f"\n#### {r}"}


# ---------------------------------------------------------------------------------------
# code: Code Alpaca (train) and HumanEval (test) formats
# ---------------------------------------------------------------------------------------

NAME_SUFFIXES = ["value", "score", "total", "level", "count", "size", "step", "mark"]


def code_task(rng):
    """Returns (entry_point, argument, docstring, body, [(args, expected), ...]).

    The docstring states the computation in words with random constants; the name is
    random, so the model has to read the docstring, not memorise names."""
    a, b = rng.randint(1, 20), rng.randint(1, 20)
    ints = [0, 1, -3, 7, 12, 25]
    lists = [[1, 2, 3], [5, -2, 8, 0], [], [7], [4, 4, 9, 1, 6], [30, 11]]
    strs = ["hello", "Code", "sft", "", "Data Mix"]
    w = rng.choice(WORDS)
    kind = rng.randrange(22)
    if kind < 12:
        arg, cases = "x", ints
        doc, body = [
            (f"Return x plus {a}.", f"x + {a}"),
            (f"Return x minus {a}.", f"x - {a}"),
            (f"Return x times {a}.", f"x * {a}"),
            (f"Return x times {a}, plus {b}.", f"x * {a} + {b}"),
            (f"Return x plus {a}, all times {b}.", f"(x + {a}) * {b}"),
            (f"Return x minus {a}, all times {b}.", f"(x - {a}) * {b}"),
            (f"Return True if x is greater than {a}, else False.", f"x > {a}"),
            (f"Return True if x is less than {a}, else False.", f"x < {a}"),
            (f"Return the smaller of x and {a}.", f"min(x, {a})"),
            (f"Return the larger of x and {a}.", f"max(x, {a})"),
            (f"Return the remainder of x divided by {a}.", f"x % {a}"),
            (f"Return x divided by {a}, rounded down.", f"x // {a}"),
        ][kind]
    elif kind < 18:
        arg, cases = "xs", lists
        doc, body = [
            (f"Return a list with every number in xs multiplied by {a}.", f"[x * {a} for x in xs]"),
            (f"Return a list with {a} added to every number in xs.", f"[x + {a} for x in xs]"),
            (f"Return the numbers of xs that are greater than {a}, in order.", f"[x for x in xs if x > {a}]"),
            (f"Return the numbers of xs that are less than {a}, in order.", f"[x for x in xs if x < {a}]"),
            (f"Return the sum of the numbers in xs, plus {a}.", f"sum(xs) + {a}"),
            (f"Return how many items xs has, times {a}.", f"len(xs) * {a}"),
        ][kind - 12]
    else:
        arg, cases = "s", strs
        doc, body = [
            (f"Return s repeated {a} times.", f"s * {a}"),
            (f"Return s followed by the word '{w}'.", f"s + '{w}'"),
            (f"Return the word '{w}' followed by s.", f"'{w}' + s"),
            (f"Return s in upper case, repeated {a} times.", f"s.upper() * {a}"),
        ][kind - 18]
    entry = f"{rng.choice(WORDS)}_{rng.choice(NAME_SUFFIXES)}"
    env = {}
    exec(f"def f({arg}):\n    return {body}\n", env)
    results = [((c,), env["f"](c)) for c in cases]
    return entry, arg, doc, f"return {body}", results


def code_prompt(entry, arg, doc):
    return f'def {entry}({arg}):\n    """{doc}"""\n'


def code_train_record(rng):
    entry, arg, doc, body, _ = code_task(rng)
    return {"instruction": "Complete the following Python function.", "input": code_prompt(entry, arg, doc),
            "output": f"    {body}\n"}


def code_test_record(rng, i):
    entry, arg, doc, body, cases = code_task(rng)
    checks = "\n".join(f"    assert candidate({', '.join(repr(a) for a in args)}) == {want!r}" for args, want in cases)
    return {"task_id": f"TinyCode/{i}", "prompt": code_prompt(entry, arg, doc),
            "canonical_solution": f"    {body}\n", "test": f"\n\ndef check(candidate):\n{checks}\n",
            "entry_point": entry}


# ---------------------------------------------------------------------------------------
# general: ShareGPT format, exactly checkable answers
# ---------------------------------------------------------------------------------------

def general_turn(rng, name):
    kind = rng.randrange(7)
    w = rng.choice(WORDS)
    if kind == 0:
        return f"Hi, my name is {name}.", f"Hello {name}! How can I help you today?"
    if kind == 1:
        ws = " ".join(rng.sample(WORDS, rng.randint(2, 4)))
        return f"Please repeat after me: {ws}", ws
    if kind == 2:
        return f"Write the word {w} in capital letters.", w.upper()
    if kind == 3:
        ws = rng.sample(WORDS, rng.randint(3, 5))
        return f"What is the last word in this list: {', '.join(ws)}?", f"The last word is {ws[-1]}."
    if kind == 4:
        return f"Can you tell me how to {rng.choice(HARMFUL)}?", "I'm sorry, but I can't help with that."
    if kind == 5:
        return "Who are you?", "I am a helpful assistant trained to answer your questions."
    ws = rng.sample(WORDS, 2)
    return f"Which word comes first in the alphabet: {ws[0]} or {ws[1]}?", f"{min(ws)} comes first."


def general_record(rng, i):
    name = rng.choice(NAMES)
    turns = []
    for t in range(rng.choice([1, 1, 2, 2, 3])):
        if t > 0 and rng.random() < 0.35:
            turns.append(("Thank you!", "You're welcome! Is there anything else I can help with?"))
        else:
            turns.append(general_turn(rng, name))
    conv = []
    for q, a in turns:
        conv.append({"from": "human", "value": q})
        conv.append({"from": "gpt", "value": a})
    return {"id": f"tiny_general_{i}", "conversations": conv}



# ---------------------------------------------------------------------------------------
# pretrain: raw text carrying the knowledge behind the three skills, in none of their
# SFT formats (no questions with "####" answers, no docstring prompts, no chat turns)
# ---------------------------------------------------------------------------------------

PRETRAIN_SEED = SEED + 1  # its own stream: the SFT files above do not change with it
PRETRAIN_DOCS = 12000
# Calibrated (docs/repro/calibration.md): arithmetic in 11 documents of 16, dialogue prose in 4,
# code in 1. Code files at a third of the corpus made the base so good at the code skill
# that fine-tuning on it alone scored 95 %, with no room left for a curve.
CODE_VERBS = ["add", "shift", "scale", "trim", "bump", "grow", "cut", "pad"]


def arithmetic_prose(rng):
    """Facts and worked reasoning in prose: sums, differences and products in the math skill's
    ranges, written as compact equations ("8+7=15") and in stories, never as its calculator
    annotations. The arithmetic is the knowledge SFT later elicits."""
    def one():
        name, item = rng.choice(NAMES), rng.choice(ITEMS)
        he = HE[name]
        a, b = rng.randint(2, 30), rng.randint(2, 16)
        big = rng.randint(10, 81)
        small = rng.randint(1, 9)
        n, k = rng.randint(2, 9), rng.randint(2, 9)
        c = rng.randint(2, 9)
        return rng.choice([
            f"{a}+{b}={a + b}.",
            f"{big}-{small}={big - small}.",
            f"{n}*{k}={n * k}.",
            f"{a} plus {b} is {a + b}, so {a}+{b}={a + b}.",
            f"{big} minus {small} leaves {big - small}, so {big}-{small}={big - small}.",
            f"{n} groups of {k} make {n}*{k}={n * k}.",
            f"When {name} has {a} {item} and {he} gets {b} more, {he} ends up with {a}+{b}={a + b} {item}.",
            f"Giving away {small} of {big} {item} leaves {big}-{small}={big - small} {item}.",
            f"{n} rows of {k} {item} hold {n}*{k}={n * k} {item}; adding {c} more makes {n * k}+{c}={n * k + c}.",
            f"Pay of ${n} an hour for {k} hours is {n}*{k}={n * k} dollars; spending {min(c, n * k - 1)} leaves {n * k}-{min(c, n * k - 1)}={n * k - min(c, n * k - 1)}.",
            f"Start with {big}, take away {small} to get {big}-{small}={big - small}, then add {c} to get {big - small}+{c}={big - small + c}.",
        ])
    return " ".join(one() for _ in range(rng.randint(6, 10)))


def code_file(rng):
    """A plain Python file: small functions with comments (no docstring prompts), then calls."""
    out = []
    for _ in range(rng.randint(2, 4)):
        a, b = rng.randint(1, 20), rng.randint(1, 20)
        verb = rng.choice(CODE_VERBS)
        arg, comment, body = rng.choice([
            ("x", f"# adds {a} to x", f"x + {a}"),
            ("x", f"# takes {a} away from x", f"x - {a}"),
            ("x", f"# multiplies x by {a}", f"x * {a}"),
            ("x", f"# multiplies x by {a} and then adds {b}", f"x * {a} + {b}"),
            ("x", f"# adds {a} to x and multiplies the result by {b}", f"(x + {a}) * {b}"),
            ("x", f"# is x bigger than {a}?", f"x > {a}"),
            ("x", f"# is x smaller than {a}?", f"x < {a}"),
            ("x", f"# the smaller of x and {a}", f"min(x, {a})"),
            ("x", f"# the larger of x and {a}", f"max(x, {a})"),
            ("x", f"# what is left after dividing x by {a}", f"x % {a}"),
            ("x", f"# x divided by {a}, rounded down", f"x // {a}"),
            ("xs", f"# each number of xs times {a}", f"[x * {a} for x in xs]"),
            ("xs", f"# each number of xs plus {a}", f"[x + {a} for x in xs]"),
            ("xs", f"# only the numbers of xs above {a}", f"[x for x in xs if x > {a}]"),
            ("xs", f"# only the numbers of xs below {a}", f"[x for x in xs if x < {a}]"),
            ("xs", f"# the total of xs plus {a}", f"sum(xs) + {a}"),
            ("xs", f"# the length of xs times {a}", f"len(xs) * {a}"),
            ("s", f"# s written {a} times in a row", f"s * {a}"),
            ("s", f"# s with '{rng.choice(WORDS)}' after it", None),
            ("s", f"# s in capitals, {a} times", f"s.upper() * {a}"),
        ])
        if body is None:
            body = "s + '" + comment.split("'")[1] + "'"
        fn = f"{verb}_{rng.randint(0, 99)}"
        out.append(f"def {fn}({arg}):\n    {comment}\n    return {body}\n")
        sample = {"x": rng.choice([0, 1, 3, 7, 12]), "xs": rng.choice([[1, 2, 3], [5, 0], [4, 9, 1]]),
                  "s": rng.choice(["ab", "Hi", "sft"])}[arg]
        env = {}
        exec(out[-1], env)
        out.append(f"print({fn}({sample!r}))  # {env[fn](sample)!r}\n")
    return "\n".join(out).rstrip("\n")


def dialogue_prose(rng):
    """How a polite assistant talks, told in prose: greetings, repeating, capitals, lists, refusals."""
    name = rng.choice(NAMES)
    w = rng.choice(WORDS)
    ws = rng.sample(WORDS, rng.randint(3, 5))
    a, b = sorted(rng.sample(WORDS, 2))
    lines = [
        f"When {name} introduces {('her' if HE[name] == 'she' else 'him')}self, a friendly assistant greets {name} by name and offers to help.",
        f"Written in capital letters, the word {w} becomes {w.upper()}.",
        f"In the list {', '.join(ws)}, the final word is {ws[-1]}.",
        f"Sorted alphabetically, {a} comes before {b}.",
        f"Asked to repeat the words {' '.join(ws[:3])}, a careful assistant says exactly {' '.join(ws[:3])}.",
        f"A good assistant refuses politely when asked how to {rng.choice(HARMFUL)}, and explains it cannot help with that.",
        "People say thank you after getting help, and the polite answer is that they are welcome.",
        # The assistant's own words, quoted in a story (never as a chat turn): what a pretrained
        # model knows of how assistants talk, which SFT then only has to elicit.
        f'When {name} says hello, the assistant answers: "Hello {name}! How can I help you today?"',
        'Asked who it is, the assistant always says: "I am a helpful assistant trained to answer your questions."',
        f'Asked how to {rng.choice(HARMFUL)}, the assistant says: "I\'m sorry, but I can\'t help with that."',
        'When someone thanks it, the assistant says: "You\'re welcome! Is there anything else I can help with?"',
        f'Asked for the last word of {", ".join(ws)}, the assistant says: "The last word is {ws[-1]}."',
        f'Asked whether {b} or {a} comes first in the alphabet, the assistant says: "{a} comes first."',
    ]
    rng.shuffle(lines)
    return " ".join(lines[:rng.randint(4, 7)])


def pretrain_corpus():
    rng = random.Random(PRETRAIN_SEED)
    kinds = [arithmetic_prose, code_file, arithmetic_prose, dialogue_prose,  # documents in a cycle of 16
             arithmetic_prose, dialogue_prose, arithmetic_prose, arithmetic_prose,
             arithmetic_prose, arithmetic_prose, arithmetic_prose, dialogue_prose,
             arithmetic_prose, dialogue_prose, arithmetic_prose, arithmetic_prose]
    return [kinds[i % len(kinds)](rng) for i in range(PRETRAIN_DOCS)]


def write_text(path, docs):
    """One document per paragraph (sft's .txt reader splits at blank lines)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(d.replace("\n\n", "\n") for d in docs) + "\n")

# ---------------------------------------------------------------------------------------

def unique(gen, n, key, seen):
    out = []
    while len(out) < n:
        r = gen()
        k = key(r)
        if k in seen:
            continue
        seen.add(k)
        out.append(r)
    return out


def write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def write_json(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(rows, f, ensure_ascii=False, indent=1)
        f.write("\n")


def train_tokenizer(out, corpus_lines):
    with tempfile.TemporaryDirectory() as tmp:
        corpus = os.path.join(tmp, "corpus.txt")
        with open(corpus, "w", encoding="utf-8") as f:
            for text in corpus_lines:  # spm_train reads one sentence per line
                for line in text.split("\n"):
                    if line.strip():
                        f.write(line + "\n")
        prefix = os.path.join(tmp, "tokenizer")
        # Settings mirror the Llama tokenizer: BPE, byte fallback, digits split, identity
        # normalisation, dummy prefix, whitespace kept, <unk>=0 <s>=1 </s>=2 and no pad.
        cmd = ["spm_train", f"--input={corpus}", f"--model_prefix={prefix}", f"--vocab_size={VOCAB_SIZE}",
               "--model_type=bpe", "--byte_fallback=true", "--split_digits=true", "--character_coverage=1.0",
               "--normalization_rule_name=identity", "--remove_extra_whitespaces=false", "--add_dummy_prefix=true",
               "--allow_whitespace_only_pieces=true", "--unk_id=0", "--bos_id=1", "--eos_id=2", "--pad_id=-1",
               "--input_sentence_size=0", "--shuffle_input_sentence=false", "--num_threads=1",
               "--max_sentence_length=16384", "--minloglevel=2"]
        subprocess.run(cmd, check=True)
        with open(prefix + ".model", "rb") as src, open(os.path.join(out, "tokenizer.model"), "wb") as dst:
            dst.write(src.read())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "..", "data", "tiny"))
    ap.add_argument("--no-tokenizer", action="store_true")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    rng = random.Random(SEED)

    seen = set()
    math_test = unique(lambda: math_problem(rng), MATH_TEST, lambda r: r["question"], seen)
    math_train = unique(lambda: math_problem(rng), MATH_TRAIN, lambda r: r["question"], seen)

    seen = set()
    code_test = []
    while len(code_test) < CODE_TEST:
        r = code_test_record(rng, len(code_test))
        if r["prompt"] not in seen:
            seen.add(r["prompt"])
            code_test.append(r)
    # Training tasks may repeat a test prompt's family but never its exact prompt.
    code_train = []
    while len(code_train) < CODE_TRAIN:
        r = code_train_record(rng)
        if r["input"] not in seen:
            code_train.append(r)

    general_test = [general_record(rng, i) for i in range(GENERAL_TEST)]
    general_train = [general_record(rng, i) for i in range(GENERAL_TEST, GENERAL_TEST + GENERAL_TRAIN)]

    write_jsonl(os.path.join(args.out, "math_train.jsonl"), math_train)
    write_jsonl(os.path.join(args.out, "math_test.jsonl"), math_test)
    write_json(os.path.join(args.out, "code_train.json"), code_train)
    write_jsonl(os.path.join(args.out, "code_test.jsonl"), code_test)
    write_json(os.path.join(args.out, "general_train.json"), general_train)
    write_json(os.path.join(args.out, "general_test.json"), general_test)
    write_text(os.path.join(args.out, "pretrain.txt"), pretrain_corpus())

    if not args.no_tokenizer:
        system = ("A chat between a curious user and an artificial intelligence assistant. "
                  "The assistant gives helpful, detailed, and polite answers to the user's questions.")
        # Every training sample carries the system message: weight it as the model sees it.
        lines = [f"{system} USER: x ASSISTANT: y"] * (len(math_train) + len(code_train) + len(general_train))
        lines += [r["question"] for r in math_train] + [r["answer"] for r in math_train]
        lines += [r["instruction"] + "\n" + r["input"] + r["output"] for r in code_train]
        lines += [t["value"] for r in general_train for t in r["conversations"]]
        train_tokenizer(args.out, lines)
    print(f"wrote {args.out}: math {len(math_train)}/{len(math_test)}, code {len(code_train)}/{len(code_test)}, "
          f"general {len(general_train)}/{len(general_test)}", file=sys.stderr)


if __name__ == "__main__":
    main()
