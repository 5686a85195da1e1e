"""How fast does a small Llama learn to copy booking values from the customer's turn?

A diagnostic for the scratch agent's recipe, not part of the experiment: one synthetic request per
example ("Please book golden wok for 3 people at 18:45 on friday.") followed by the
``book_restaurant`` call that copies its four values, in the scratch agent's ChatML format,
loss on the call only. Each value is one token (as with ``ScratchConfig.value_tokens``), so a
model that copies gets the call exactly right and one that guesses from frequencies gets
~1/(7*8*40*8) of them. Prints, every ``--eval-every`` steps, the training loss and the share of
60 held-out requests whose whole call the model predicts exactly (teacher-forced argmax).

    python examples/toolwoz_from_scratch/copy_diagnostic.py --init 0.02
    python examples/toolwoz_from_scratch/copy_diagnostic.py --init 0.1
    python examples/toolwoz_from_scratch/copy_diagnostic.py --init 0.1 --prefix-tokens 300

``--prefix-tokens N`` puts the first N tokens of a system turn (the native agent's system prompt,
repeated) in front of every example, as the scratch template's system turn does.
"""

from __future__ import annotations

import argparse
import json
import math
import random
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from josh_hf.agents.native import NATIVE_SYSTEM_PROMPT
from josh_hf.testing.tiny import build_tiny_tokenizer

DAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
NAMES = ("golden wok", "curry garden", "the missing sock", "pizza hut city centre", "bedouin", "graffiti", "nandos",
         "la raza")
TIMES = tuple(f"{h:02d}:{m:02d}" for h in range(11, 21) for m in (0, 15, 30, 45))
PATTERNS = ("Please book {n} for {p} people at {t} on {d}.", "Can you book {n} for {d} at {t}? There are {p} of us.",
            "I need a table at {n} on {d} for {p} at {t}.")


def example(rng: random.Random) -> tuple[str, str]:
    """(prompt, call): a booking request and the completion that copies its values."""
    d, p, t, n = rng.choice(DAYS), str(rng.randint(1, 8)), rng.choice(TIMES), rng.choice(NAMES)
    request = rng.choice(PATTERNS).format(d=d, p=p, t=t, n=n)
    call = json.dumps({"name": "book_restaurant", "arguments": {"time": t, "day": d, "people": p, "name": n}})
    return (f"<|im_start|>user\n{request}<|im_end|>\n<|im_start|>assistant\n<tool_call>\n",
            f"{call}\n</tool_call><|im_end|>")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--init", type=float, default=0.02, help="LlamaConfig.initializer_range")
    ap.add_argument("--lr", type=float, default=1e-3, help="peak learning rate (cosine, 30 warm-up steps)")
    ap.add_argument("--steps", type=int, default=600)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--prefix-tokens", type=int, default=0)
    ap.add_argument("--hidden-size", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    ap.add_argument("--eval-every", type=int, default=100)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    corpus_rng = random.Random(1)
    corpus = ["".join(example(corpus_rng)) for _ in range(2000)] + [NATIVE_SYSTEM_PROMPT]
    tok = build_tiny_tokenizer(corpus, vocab_size=1024, isolate_spaces=True,
                               value_tokens=DAYS + NAMES + TIMES + tuple("12345678"))

    def ids(text: str) -> list[int]:
        return tok(text, add_special_tokens=False)["input_ids"]

    prefix = ids("<|im_start|>system\n" + " ".join([NATIVE_SYSTEM_PROMPT] * 8))[: args.prefix_tokens]
    test = [tuple(map(ids, example(random.Random(10_000 + i)))) for i in range(60)]

    torch.manual_seed(args.seed)
    rng = random.Random(args.seed)
    config = LlamaConfig(vocab_size=len(tok), hidden_size=args.hidden_size, intermediate_size=3 * args.hidden_size,
                         num_hidden_layers=args.layers, num_attention_heads=4, num_key_value_heads=2,
                         tie_word_embeddings=True, initializer_range=args.init, pad_token_id=tok.pad_token_id)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.0, betas=(0.9, 0.95))
    print(f"{sum(p.numel() for p in model.parameters()):,} parameters, {vars(args)}", flush=True)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        batch = [tuple(map(ids, example(rng))) for _ in range(args.batch_size)]
        length = max(len(prefix) + len(a) + len(b) for a, b in batch)
        input_ids = torch.full((len(batch), length), tok.pad_token_id)
        labels = torch.full((len(batch), length), -100)
        mask = torch.zeros((len(batch), length), dtype=torch.long)
        for i, (a, b) in enumerate(batch):
            seq = prefix + a + b
            input_ids[i, : len(seq)] = torch.tensor(seq)
            mask[i, : len(seq)] = 1
            labels[i, len(prefix) + len(a): len(seq)] = torch.tensor(b)
        scale = min(1.0, step / 30) * 0.5 * (1 + math.cos(math.pi * step / args.steps))
        for group in opt.param_groups:
            group["lr"] = args.lr * scale
        loss = model(input_ids=input_ids, attention_mask=mask, labels=labels).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad()
        if step % args.eval_every == 0 or step == args.steps:
            model.eval()
            exact = 0
            with torch.no_grad():
                for a, b in test:
                    start = len(prefix) + len(a)
                    pred = model(torch.tensor([prefix + a + b])).logits[0].argmax(-1)
                    exact += all(int(pred[start + j - 1]) == b[j] for j in range(len(b)))
            model.train()
            print(f"step {step:5d}  loss {loss.item():.3f}  exact calls {exact}/{len(test)}  "
                  f"({time.perf_counter() - started:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
