#!/usr/bin/env python3
"""FastChat's side of tests/clients/fastchat_test.cpp: `sft data render` against
fastchat.conversation, record by record, byte for byte.

  fastchat_render.py --sft BUILD/sft --data sharegpt.json [--templates vicuna_v1.1,chatml]
                     [--pair SFT=FASTCHAT ...]

--pair compares any sft template with any FastChat one instead (e.g. alpaca=alpaca, to
see where two formats part).

For each sft template with a FastChat counterpart (TEMPLATES below) it renders every
conversation of the ShareGPT file both ways and compares:

  train        sft data render --json           vs  all messages, get_prompt()
  system       the same with --system TEXT      vs  set_system_message(TEXT) first
  generation   sft data render --generation     vs  first user message (all messages when
                                                    the last is the user's) + (roles[1], None)
  user_turns   every conversation cut after each of its user turns (so that it ends with
               the user's turn), sft data render --generation
                                                vs  the cut messages + (roles[1], None)
  synthetic_*  a few hand-made conversations (system turn, empty turns) through "train"
               and "user_turns"

Prints one JSON object: per template and check, the records compared and mismatches, and
the first mismatch (record, id, character position, both texts around it). Exits 1 on any
mismatch; a check whose sft command fails counts all its records as mismatches.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile

import fastchat
from fastchat.conversation import get_conv_template

# sft template -> fastchat.conversation template. sft's "alpaca" (Stanford PROMPT_DICT,
# "### Instruction:\n") and "raw" ("user\nanswer</s>") have FastChat namesakes with other
# formats ("### Instruction: " on one line; bare concatenation), so they are not compared.
TEMPLATES = {"vicuna_v1.1": "vicuna_v1.1", "llama-2": "llama-2", "chatml": "qwen-7b-chat"}

USER_FROM = {"human", "user"}
ASSISTANT_FROM = {"gpt", "assistant", "chatgpt", "bard"}

SYSTEM_TEXT = "You answer in one short paragraph.\nNo lists."

SYNTHETIC = [
    {"id": "synthetic_system", "conversations": [
        {"from": "system", "value": "Be terse."}, {"from": "human", "value": "Hi"},
        {"from": "gpt", "value": "Hello."}, {"from": "human", "value": "Bye"}, {"from": "gpt", "value": "Bye."}]},
    {"id": "synthetic_empty_system", "conversations": [
        {"from": "system", "value": ""}, {"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
    {"id": "synthetic_empty_user", "conversations": [
        {"from": "human", "value": ""}, {"from": "gpt", "value": "Nothing was asked."},
        {"from": "human", "value": "Now?"}, {"from": "gpt", "value": "Yes."}]},
    {"id": "synthetic_empty_answer", "conversations": [
        {"from": "human", "value": "Say nothing."}, {"from": "gpt", "value": ""},
        {"from": "human", "value": "Thanks"}, {"from": "gpt", "value": "  spaces\n\nand lines  "}]},
]


def fail(msg, code=1):
    print("fastchat_render.py: " + msg, file=sys.stderr)
    sys.exit(code)


def split(record):
    """(system or None, [(is_user, text), ...]) of a ShareGPT record."""
    system, turns = None, []
    for k, t in enumerate(record["conversations"]):
        if t["from"] == "system" and k == 0:
            system = t["value"]
        elif t["from"] in USER_FROM:
            turns.append((True, t["value"]))
        elif t["from"] in ASSISTANT_FROM:
            turns.append((False, t["value"]))
        else:
            fail("record %s: unexpected \"from\": %r" % (record.get("id"), t["from"]))
    return system, turns


def fastchat_prompt(fc_name, system, turns, generation):
    conv = get_conv_template(fc_name)
    if system is not None:
        conv.set_system_message(system)
    for k, (is_user, text) in enumerate(turns):
        if is_user != (k % 2 == 0):
            fail("turns must alternate user/assistant starting with the user")
        conv.append_message(conv.roles[k % 2], text)
    if generation:
        conv.append_message(conv.roles[1], None)
    return conv.get_prompt()


def answered(turns):
    """The turns up to the last answer: what a training sample holds."""
    return turns[: len(turns) // 2 * 2]


def cut_after_user_turns(records):
    """Each conversation cut after each of its user turns: it ends with the user's turn."""
    out = []
    for r in records:
        system, turns = split(r)
        head = [{"from": "system", "value": system}] if system is not None else []
        for k in range(0, len(turns), 2):
            conv = head + [{"from": "human" if u else "gpt", "value": t} for u, t in turns[: k + 1]]
            out.append({"id": "%s/user%d" % (r.get("id"), k // 2), "conversations": conv})
    return out


def sft_render(sft, template, path, extra):
    """sft's JSON lines, or the error text when sft fails."""
    cmd = [sft, "data", "render", "--format", "sharegpt", "--template", template, "--json", path] + extra
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return "%s exited with %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip())
    return [json.loads(line) for line in p.stdout.splitlines() if line.strip()]


def first_difference(a, b):
    """Where a and b (strings or lists) first differ: the length of their common prefix."""
    return len(os.path.commonprefix([a, b]))


class Tally:
    def __init__(self, pairs):
        self.pairs = pairs
        self.results = {}
        self.first = None

    def compare(self, template, check, want, got):
        """want: {index: (id, text)} from FastChat; got: sft's JSON lines or its error."""
        result = self.results.setdefault(template, {"fastchat": self.pairs[template], "checks": {}})
        if isinstance(got, str):
            result["checks"][check] = {"records": len(want), "mismatches": len(want), "sft_error": got}
            if self.first is None:
                self.first = {"template": template, "check": check, "index": None, "id": None, "position": 0,
                              "fastchat": "", "sft": got}
            return len(want)
        mismatches = 0
        seen = set()
        for j in got:
            idx = j["index"]
            seen.add(idx)
            if idx not in want:
                mismatches += 1
                self.note(template, check, idx, j.get("id"), 0, "<no such record>", j["text"])
                continue
            wid, wtext = want[idx]
            if j["text"] != wtext or (wid is not None and j.get("id") != wid):
                mismatches += 1
                self.note(template, check, idx, wid, first_difference(wtext, j["text"]), wtext, j["text"])
        for idx in sorted(set(want) - seen):
            mismatches += 1
            self.note(template, check, idx, want[idx][0], 0, want[idx][1], "<not rendered by sft>")
        result["checks"][check] = {"records": len(want), "mismatches": mismatches}
        return mismatches

    def note(self, template, check, idx, rid, pos, want, got):
        if self.first is None:
            self.first = {"template": template, "check": check, "index": idx, "id": rid, "position": pos,
                          "fastchat": want[max(0, pos - 40): pos + 80], "sft": got[max(0, pos - 40): pos + 80]}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sft", required=True, help="the sft binary")
    ap.add_argument("--data", required=True, help="a ShareGPT JSON array ({id, conversations: [{from, value}]})")
    ap.add_argument("--templates", default=",".join(TEMPLATES), help="sft template names, comma-separated")
    ap.add_argument("--pair", action="append", default=[], metavar="SFT=FASTCHAT",
                    help="compare these two templates instead (repeatable)")
    args = ap.parse_args()
    if args.pair:
        pairs = dict(p.split("=", 1) for p in args.pair if "=" in p)
        if len(pairs) != len(args.pair):
            fail("--pair: expected SFT=FASTCHAT, got %r" % args.pair)
    else:
        pairs = {}
        for t in (t for t in args.templates.split(",") if t):
            if t not in TEMPLATES:
                fail("--templates: %r has no FastChat counterpart (comparable: %s)" % (t, ", ".join(TEMPLATES)))
            pairs[t] = TEMPLATES[t]
    with open(args.data, encoding="utf-8") as f:
        records = json.load(f)
    if not isinstance(records, list) or not records:
        fail(args.data + ": expected a non-empty JSON array of conversations")

    tally = Tally(pairs)
    with tempfile.TemporaryDirectory(prefix="fastchat_render.") as tmp:
        cut = cut_after_user_turns(records)
        synthetic_cut = cut_after_user_turns(SYNTHETIC)
        files = {}
        for name, recs in (("cut", cut), ("synthetic", SYNTHETIC), ("synthetic_cut", synthetic_cut)):
            files[name] = os.path.join(tmp, name + ".json")
            with open(files[name], "w", encoding="utf-8") as f:
                json.dump(recs, f, ensure_ascii=False, indent=1)

        for t, fc in pairs.items():
            parts = [(i, r.get("id"), split(r)) for i, r in enumerate(records)]
            # A training sample holds the answered turns only.
            want = {i: (rid, fastchat_prompt(fc, s, answered(turns), False)) for i, rid, (s, turns) in parts}
            tally.compare(t, "train", want, sft_render(args.sft, t, args.data, []))
            # --system replaces the template's default, not a record's own system turn.
            want = {i: (rid, fastchat_prompt(fc, SYSTEM_TEXT if s is None else s, answered(turns), False))
                    for i, rid, (s, turns) in parts}
            tally.compare(t, "system", want, sft_render(args.sft, t, args.data, ["--system", SYSTEM_TEXT]))
            # --generation: the prompt for an unanswered last turn, else for the first user turn.
            want = {i: (rid, fastchat_prompt(fc, s, turns if len(turns) % 2 else turns[:1], True))
                    for i, rid, (s, turns) in parts}
            tally.compare(t, "generation", want, sft_render(args.sft, t, args.data, ["--generation"]))
            want = {i: (r["id"], fastchat_prompt(fc, *split(r), True)) for i, r in enumerate(cut)}
            tally.compare(t, "user_turns", want, sft_render(args.sft, t, files["cut"], ["--generation"]))

            want = {i: (r["id"], fastchat_prompt(fc, *split(r), False)) for i, r in enumerate(SYNTHETIC)}
            tally.compare(t, "synthetic_train", want, sft_render(args.sft, t, files["synthetic"], []))
            want = {i: (r["id"], fastchat_prompt(fc, *split(r), True)) for i, r in enumerate(synthetic_cut)}
            tally.compare(t, "synthetic_user_turns", want, sft_render(args.sft, t, files["synthetic_cut"], ["--generation"]))

    total = sum(c["mismatches"] for t in tally.results.values() for c in t["checks"].values())
    compared = sum(c["records"] for t in tally.results.values() for c in t["checks"].values())
    out = {"fastchat": fastchat.__version__, "data": args.data, "conversations": len(records),
           "user_turns": len(cut), "templates": tally.results, "compared": compared, "mismatches": total,
           "first_mismatch": tally.first}
    print(json.dumps(out, indent=1))
    if total:
        first = tally.first
        print("fastchat_render.py: %d mismatch(es); first: template %s, check %s, record %s (id %s), character %d\n"
              "  fastchat: %r\n  sft:      %r" % (total, first["template"], first["check"], first["index"], first["id"],
                                                 first["position"], first["fastchat"], first["sft"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
