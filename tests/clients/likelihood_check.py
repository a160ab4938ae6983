"""The general eval's reference likelihoods, computed by transformers with FastChat's template.

usage: likelihood_check.py MODEL_DIR GENERAL_TEST_JSON LIMIT

Each user turn of the first LIMIT conversations is rendered by FastChat's vicuna_v1.1
conversation (earlier answers from the record, then the open assistant slot); the reference
answer's tokens are those the prompt + " " + answer + "</s>" adds after the prompt, scored
teacher-forced by AutoModelForCausalLM in fp32. A turn is constant-answer when its stripped
reference is the reference of at least 10 of these turns (sft's rule). Prints one JSON line:
open/constant likelihood = exp(sum of log-probs / tokens) over each type, and the token counts.
"""
import collections
import json
import math
import sys

import torch
from fastchat.conversation import get_conv_template
from transformers import LlamaForCausalLM, LlamaTokenizer


def main():
    model_dir, test_file, limit = sys.argv[1], sys.argv[2], int(sys.argv[3])
    tok = LlamaTokenizer.from_pretrained(model_dir, legacy=True)
    model = LlamaForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    turns = []
    for rec in json.load(open(test_file))[:limit]:
        msgs = rec["conversations"]
        turns += [(msgs, t) for t in range(len(msgs) // 2)]
    refs = [msgs[2 * t + 1]["value"].strip() for msgs, t in turns]
    count = collections.Counter(refs)
    total = {True: 0.0, False: 0.0}
    tokens = {True: 0, False: 0}
    with torch.no_grad():
        for (msgs, t), ref in zip(turns, refs):
            conv = get_conv_template("vicuna_v1.1")
            for k in range(t):
                conv.append_message(conv.roles[0], msgs[2 * k]["value"])
                conv.append_message(conv.roles[1], msgs[2 * k + 1]["value"])
            conv.append_message(conv.roles[0], msgs[2 * t]["value"])
            conv.append_message(conv.roles[1], None)
            prompt = conv.get_prompt()
            prompt_ids = tok(prompt).input_ids
            ids = tok(prompt + " " + msgs[2 * t + 1]["value"] + "</s>").input_ids
            logp = torch.log_softmax(model(torch.tensor([ids])).logits[0].float(), -1)
            constant = count[ref] >= 10
            for i in range(len(prompt_ids), len(ids)):
                total[constant] += logp[i - 1, ids[i]].item()
                tokens[constant] += 1

    def geo(k):
        return math.exp(total[k] / tokens[k]) if tokens[k] else None

    print(json.dumps({"open_turn_likelihood": geo(False), "open_turn_reference_tokens": tokens[False],
                      "constant_turn_likelihood": geo(True), "constant_turn_reference_tokens": tokens[True]}))


if __name__ == "__main__":
    main()
