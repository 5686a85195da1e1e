"""A local ``transformers`` backend: batched chat generation with per-request seeded sampling.

Design (what JOSH needs: many sibling requests, each with its own seed, in one call):

* Every request is rendered with the tokenizer's chat template (``tools=`` included), then the
  requests are grouped by the settings that must be shared by one ``generate`` call
  (``max_new_tokens`` and stop strings), sorted by prompt length, and cut into left-padded
  batches under a token budget (rows x (longest prompt + max_new_tokens)) and a row cap.
* Temperature, top-p, top-k and the seed are *per row*: :class:`PerRowSampler` draws the next
  token with the Gumbel-max trick, using noise from a counter-based hash of
  ``(seed, step, token id)``. Sampling is therefore exact (Gumbel-max samples the softmax of the
  warped logits), vectorised over the batch, identical on CPU and GPU, and a request's noise
  depends only on its own seed — not on its batch neighbours or on the global RNG. Greedy rows
  in the same batch are left untouched. Caveat: the *logits* of a row can differ in the last
  float bits with batch composition (padding changes kernel shapes), so an exact tie can flip;
  with float32 this is vanishingly rare, with bf16/4-bit it is more likely.
* The chosen tokens are then decoded by ``generate``'s greedy path (the processor leaves only
  the sampled token finite), so everything else — caches, EOS handling, stop strings — is the
  stock transformers code.
"""

from __future__ import annotations

import logging
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from transformers import LogitsProcessor, LogitsProcessorList

from .base import Backend, GenerationOutput, GenerationRequest, SamplingParams
from .toolcalls import parse_completion

logger = logging.getLogger(__name__)

_M32 = 0xFFFFFFFF


def _fmix32(x: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding values in [0, 2**32).

    int64 products may wrap around, but masking keeps the exact low 32 bits on every device.
    """
    x = x ^ (x >> 16)
    x = (x * 0x85EBCA6B) & _M32
    x = x ^ (x >> 13)
    x = (x * 0xC2B2AE35) & _M32
    return x ^ (x >> 16)


def counter_uniform(seeds: torch.Tensor, step: int, vocab_size: int) -> torch.Tensor:
    """Uniform(0, 1) noise of shape ``(len(seeds), vocab_size)``, a pure function of
    ``(seed, step, token id)`` (no RNG state, so rows are independent of each other)."""
    device = seeds.device
    lo, hi = seeds & _M32, (seeds >> 32) & _M32
    key = _fmix32(lo ^ _fmix32(hi + 0x68E31DA4))
    key = _fmix32((key + (step * 0x9E3779B9 & _M32)) & _M32)
    tokens = torch.arange(vocab_size, device=device, dtype=torch.int64)
    h = _fmix32(key[:, None] ^ _fmix32((tokens * 0x27D4EB2F + 0x165667B1) & _M32)[None, :])
    h = _fmix32((h + key[:, None]) & _M32)
    # 24 high bits → float32 exactly; +0.5 keeps u strictly inside (0, 1).
    return ((h >> 8).to(torch.float32) + 0.5) / float(1 << 24)


class PerRowSampler(LogitsProcessor):
    """Samples the next token of each row with its own temperature / top-p / top-k / seed.

    Rows with ``temperature <= 0`` are left as they are (greedy). For the others the scores are
    replaced by ``0`` at the sampled token and ``-inf`` elsewhere, so greedy decoding picks it.
    """

    def __init__(self, params: Sequence[SamplingParams], seeds: Sequence[int], prompt_length: int):
        self.temperature = torch.tensor([max(p.temperature, 0.0) for p in params], dtype=torch.float32)
        self.top_p = torch.tensor([p.top_p for p in params], dtype=torch.float32)
        self.top_k = torch.tensor([max(p.top_k, 0) for p in params], dtype=torch.int64)
        self.seeds = torch.tensor(list(seeds), dtype=torch.int64)
        self.sampled = self.temperature > 0
        self.prompt_length = prompt_length
        self.needs_sort = bool(((self.top_k > 0) | (self.top_p < 1.0)).any())
        self._rows: torch.Tensor | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if not bool(self.sampled.any()):
            return scores
        if self._rows is None or self._rows.device != scores.device:
            # Move the per-row settings to the logits' device once, not at every step.
            device = scores.device
            self._rows = self.sampled.nonzero().squeeze(-1).to(device)
            self._temperature = self.temperature.to(device)[self._rows, None]
            self._top_k, self._top_p = self.top_k.to(device)[self._rows], self.top_p.to(device)[self._rows]
            self._seeds = self.seeds.to(device)[self._rows]
        rows = self._rows
        step = input_ids.shape[1] - self.prompt_length
        logits = scores[rows].float() / self._temperature
        if self.needs_sort:
            logits = self._truncate(logits, self._top_k, self._top_p)
        noise = counter_uniform(self._seeds, step, logits.shape[-1])
        gumbel = -torch.log(-torch.log(noise))
        choice = torch.argmax(logits + gumbel, dim=-1)
        picked = torch.full_like(scores[rows], float("-inf"))
        picked.scatter_(1, choice[:, None], 0.0)
        out = scores.clone()
        out[rows] = picked
        return out

    @staticmethod
    def _truncate(logits: torch.Tensor, top_k: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
        """Per-row top-k then top-p (nucleus) masking; the most likely token always survives."""
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        ranks = torch.arange(logits.shape[-1], device=logits.device)[None, :]
        sorted_logits = sorted_logits.masked_fill((top_k[:, None] > 0) & (ranks >= top_k[:, None]), float("-inf"))
        probs = sorted_logits.softmax(dim=-1)
        # Drop a token when the tokens ranked above it already cover top_p.
        drop = (probs.cumsum(dim=-1) - probs) > top_p[:, None]
        drop[:, 0] = False
        sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
        return torch.empty_like(logits).scatter_(1, order, sorted_logits)


@dataclass
class _Prepared:
    """One rendered request."""

    index: int
    prompt: str
    ids: list[int]
    request: GenerationRequest


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


class TransformersBackend(Backend):
    """Generate with a local ``transformers`` causal LM (optionally with a PEFT adapter / 4-/8-bit).

    ``model`` is a Hub id or local path (loaded with ``from_pretrained``), or an already loaded
    model — e.g. the policy being trained, in which case ``tokenizer`` must be given too and the
    model is used as is (its training mode is restored after each call).
    """

    name = "transformers"

    def __init__(
        self,
        model: Any,
        tokenizer: Any = None,
        *,
        adapter: str | os.PathLike[str] | None = None,
        load_in_4bit: bool = False,
        load_in_8bit: bool = False,
        dtype: Any = "auto",
        device_map: Any = None,
        max_batch_tokens: int = 16384,
        max_batch_size: int = 64,
        trust_remote_code: bool = False,
    ):
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if load_in_4bit and load_in_8bit:
            raise ValueError("choose at most one of load_in_4bit / load_in_8bit")
        if isinstance(model, (str, os.PathLike)):
            source = os.fspath(model)
            kwargs: dict[str, Any] = {"dtype": dtype, "trust_remote_code": trust_remote_code}
            if load_in_4bit or load_in_8bit:
                kwargs["quantization_config"] = self._quantization_config(load_in_4bit)
            if device_map is None and torch.cuda.is_available():
                device_map = "auto"  # a path on a GPU machine should not silently run on CPU
            if device_map is not None:
                kwargs["device_map"] = device_map
            self.model = AutoModelForCausalLM.from_pretrained(source, **kwargs)
            tokenizer = tokenizer if tokenizer is not None else source
        else:
            if load_in_4bit or load_in_8bit:
                raise ValueError("quantization applies when loading from a path; quantize the model object yourself")
            self.model = model
            if tokenizer is None:
                tokenizer = getattr(getattr(model, "config", None), "name_or_path", None)
                if not tokenizer:
                    raise ValueError("pass `tokenizer=` together with an already loaded model")
        if isinstance(tokenizer, (str, os.PathLike)):
            tokenizer = AutoTokenizer.from_pretrained(os.fspath(tokenizer), trust_remote_code=trust_remote_code)
        self.tokenizer = tokenizer
        if adapter is not None:
            from peft import PeftModel

            # Not merged: the adapter stays swappable, and merging into 4-bit weights is lossy.
            self.model = PeftModel.from_pretrained(self.model, os.fspath(adapter), is_trainable=False)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size
        self.batch_sizes: list[int] = []
        """Rows of every ``generate`` call made so far (for tests and benchmarks)."""

        config = getattr(self.model, "config", None)
        self.model_type: str | None = getattr(config, "model_type", None)
        self.eos_token_ids = self._eos_ids()
        pad = self.tokenizer.pad_token_id
        self.pad_token_id: int = pad if pad is not None else self.eos_token_ids[0]

    @staticmethod
    def _quantization_config(four_bit: bool) -> Any:
        from transformers import BitsAndBytesConfig

        if four_bit:
            return BitsAndBytesConfig(
                load_in_4bit=True,
                bnb_4bit_quant_type="nf4",
                bnb_4bit_use_double_quant=True,
                bnb_4bit_compute_dtype=torch.bfloat16,
            )
        return BitsAndBytesConfig(load_in_8bit=True)

    def _eos_ids(self) -> list[int]:
        """EOS ids from the generation config (chat models often list several) and the tokenizer."""
        ids: list[int] = []
        gen_config = getattr(self.model, "generation_config", None)
        eos = getattr(gen_config, "eos_token_id", None)
        ids.extend(eos if isinstance(eos, (list, tuple)) else [eos] if eos is not None else [])
        if self.tokenizer.eos_token_id is not None:
            ids.append(self.tokenizer.eos_token_id)
        ids = list(dict.fromkeys(int(i) for i in ids))
        if not ids:
            raise ValueError("the model/tokenizer define no EOS token")
        return ids

    @property
    def device(self) -> torch.device:
        """Where inputs go (the first device when the model is spread by ``device_map``)."""
        device = getattr(self.model, "device", None)
        if device is None:
            device = next(self.model.parameters()).device
        return torch.device(device)

    # ----------------------------------------------------------------------------- rendering

    def render(self, request: GenerationRequest) -> str:
        """The prompt text for ``request`` (chat template, tools, generation prompt)."""
        return self.tokenizer.apply_chat_template(
            request.messages,
            tools=request.tools or None,
            add_generation_prompt=True,
            tokenize=False,
        )

    def _prepare(self, index: int, request: GenerationRequest) -> _Prepared:
        prompt = self.render(request)
        # The template already wrote BOS/control tokens: don't let the tokenizer add them twice.
        ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
        return _Prepared(index=index, prompt=prompt, ids=list(ids), request=request)

    def plan_batches(self, prepared: Sequence[_Prepared]) -> list[list[_Prepared]]:
        """Group by the settings one ``generate`` call shares, sort by prompt length (longest
        first, so memory trouble shows up in the first batch), and cut under the budgets."""
        groups: dict[tuple[int, tuple[str, ...]], list[_Prepared]] = defaultdict(list)
        for item in prepared:
            sampling = item.request.sampling
            groups[(sampling.max_new_tokens, tuple(sampling.stop))].append(item)
        batches: list[list[_Prepared]] = []
        for (max_new, _), items in groups.items():
            items = sorted(items, key=lambda it: len(it.ids), reverse=True)
            batch: list[_Prepared] = []
            longest = 0
            for item in items:
                new_longest = max(longest, len(item.ids))
                cost = (len(batch) + 1) * (new_longest + max_new)
                if batch and (cost > self.max_batch_tokens or len(batch) >= self.max_batch_size):
                    batches.append(batch)
                    batch, new_longest = [], len(item.ids)
                batch.append(item)
                longest = new_longest
            if batch:
                batches.append(batch)
        return batches

    # ---------------------------------------------------------------------------- generation

    def generate(self, requests: Sequence[GenerationRequest]) -> list[GenerationOutput]:
        """Continue every request; the i-th output answers the i-th request. Never raises for a
        single bad request: its output carries ``error`` instead."""
        outputs: list[GenerationOutput | None] = [None] * len(requests)
        prepared: list[_Prepared] = []
        for i, request in enumerate(requests):
            try:
                prepared.append(self._prepare(i, request))
            except Exception as exc:  # noqa: BLE001 - a template error is this request's problem only
                outputs[i] = GenerationOutput(text="", error=f"chat template failed: {type(exc).__name__}: {exc}")
        was_training = bool(getattr(self.model, "training", False))
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in self.plan_batches(prepared):
                    for item, out in zip(batch, self._run_batch(batch)):
                        outputs[item.index] = out
        finally:
            if was_training:
                self.model.train()
        return [out if out is not None else GenerationOutput(text="", error="not generated") for out in outputs]

    def _run_batch(self, batch: list[_Prepared]) -> list[GenerationOutput]:
        """Generate one batch; on out-of-memory, halve it and retry."""
        try:
            return self._generate_batch(batch)
        except Exception as exc:
            if _is_oom(exc) and len(batch) > 1:
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                half = len(batch) // 2
                return self._run_batch(batch[:half]) + self._run_batch(batch[half:])
            logger.exception("generation failed for a batch of %d", len(batch))
            return [GenerationOutput(text="", error=f"{type(exc).__name__}: {exc}") for _ in batch]

    def _generate_batch(self, batch: list[_Prepared]) -> list[GenerationOutput]:
        from transformers import GenerationConfig

        self.batch_sizes.append(len(batch))
        sampling = batch[0].request.sampling
        width = max(len(item.ids) for item in batch)
        # Left padding: every row's last prompt token sits at the same position, where decoding starts.
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, item in enumerate(batch):
            input_ids[row, width - len(item.ids) :] = torch.tensor(item.ids, dtype=torch.long)
            attention_mask[row, width - len(item.ids) :] = 1
        # A fresh config: the request's SamplingParams are authoritative, not the checkpoint's
        # sampling defaults (Qwen ships do_sample=True, repetition_penalty=1.05, ...).
        gen_config = GenerationConfig(
            max_new_tokens=sampling.max_new_tokens,
            do_sample=False,
            num_beams=1,
            eos_token_id=self.eos_token_ids,
            pad_token_id=self.pad_token_id,
            use_cache=True,
            stop_strings=list(sampling.stop) or None,
        )
        processors = LogitsProcessorList()
        params = [item.request.sampling for item in batch]
        if any(not p.greedy for p in params):
            # A seedless sampled request draws its seed from torch's global RNG, so
            # torch.manual_seed still makes a whole run repeatable.
            seeds = [p.seed if p.seed is not None else int(torch.randint(0, 2**62, (1,)).item()) for p in params]
            processors.append(PerRowSampler(params, seeds, prompt_length=width))
        device = self.device
        extra: dict[str, Any] = {"tokenizer": self.tokenizer} if sampling.stop else {}
        sequences = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_config,
            logits_processor=processors,
            **extra,
        )
        generated = sequences[:, width:].tolist()
        return [self._finish(item, row) for item, row in zip(batch, generated)]

    def _finish(self, item: _Prepared, tokens: list[int]) -> GenerationOutput:
        """Cut at EOS, apply stop strings, parse tool calls, count tokens."""
        eos = set(self.eos_token_ids)
        cut = next((i for i, tok in enumerate(tokens) if tok in eos), None)
        body = tokens if cut is None else tokens[:cut]
        completion_tokens = len(tokens) if cut is None else cut + 1
        finish = "stop" if cut is not None else "length"
        raw = self.tokenizer.decode(body, skip_special_tokens=False)
        stops = item.request.sampling.stop
        hits = [pos for pos in (raw.find(s) for s in stops if s) if pos >= 0]
        if hits:
            # generate() stops on the token that completes a stop string; the string itself and
            # whatever that token carried beyond it are not part of the answer (OpenAI semantics).
            raw, finish = raw[: min(hits)], "stop"
        try:
            text, calls = parse_completion(
                raw, self.tokenizer, prompt=item.prompt, tools=item.request.tools, model_type=self.model_type
            )
        except Exception as exc:  # noqa: BLE001 - parsing must never take the batch down
            text, calls = raw, []
            logger.warning("tool-call parsing failed: %s", exc)
        if calls:
            finish = "tool_calls"
        return GenerationOutput(
            text=text,
            tool_calls=calls,
            raw=raw,
            prompt_tokens=len(item.ids),
            completion_tokens=completion_tokens,
            finish_reason=finish,
        )

    def close(self) -> None:
        """Drop the model; frees GPU memory once no one else holds it."""
        self.model = None  # type: ignore[assignment]
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
