"""Throughput of TransformersBackend: one batched call vs one request at a time.

JOSH sends many sibling requests (same context, different seeds) per call; this measures what
batching buys. By default it builds a tiny random model (seconds, offline); pass ``--model``
for a real checkpoint (e.g. on a GPU machine).

    python benchmarks/backend_batching.py [--model PATH_OR_ID] [--requests 32] [--new-tokens 32]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from josh_hf.backends import GenerationRequest, SamplingParams
from josh_hf.backends.transformers_backend import TransformersBackend

PROMPTS = [
    "I am looking for a cheap hotel in the north with free parking.",
    "Book a table for 2 people at 18:30 on friday.",
    "I need a train from cambridge to london kings cross leaving after 09:30 on monday, for 3 people.",
    "hi",
]


def make_requests(n: int, new_tokens: int, temperature: float) -> list[GenerationRequest]:
    """``n`` requests over a few prompts of different lengths, each with its own seed."""
    return [
        GenerationRequest(
            messages=[{"role": "user", "content": PROMPTS[i % len(PROMPTS)]}],
            sampling=SamplingParams(temperature=temperature, max_new_tokens=new_tokens, seed=i),
        )
        for i in range(n)
    ]


def timed(backend: TransformersBackend, requests: list[GenerationRequest], batched: bool) -> tuple[float, int]:
    start = time.perf_counter()
    outputs = backend.generate(requests) if batched else [backend.generate([r])[0] for r in requests]
    elapsed = time.perf_counter() - start
    return elapsed, sum(o.completion_tokens for o in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="Hub id or path (default: a freshly built tiny model)")
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=32)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-batch-size", type=int, default=64)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from josh_hf.testing import build_tiny_model

            model = str(build_tiny_model(tmp, hidden=256, layers=4))
        backend = TransformersBackend(model, max_batch_size=args.max_batch_size)
        requests = make_requests(args.requests, args.new_tokens, args.temperature)
        backend.generate(requests[:2])  # warm-up
        print(f"model={model} device={backend.device} requests={args.requests} new_tokens={args.new_tokens}")
        for batched in (False, True):
            elapsed, tokens = timed(backend, requests, batched)
            label = "batched     " if batched else "one-by-one  "
            print(f"{label} {elapsed:7.2f} s  {tokens / elapsed:9.1f} generated tokens/s")


if __name__ == "__main__":
    main()
