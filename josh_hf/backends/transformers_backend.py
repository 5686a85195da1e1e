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
* Prefix KV caching (``prefix_cache=True``): agent prompts are long, and a conversation's next
  prompt is its previous prompt and reply plus a little (JOSH siblings also share their
  parent's). After each call every row's KV cache (prompt and reply) goes into a bounded store
  keyed by token ids; the next call's rows each resume from the longest cached head of their
  own prompt and prefill only the rest. Rows with no such head share the batch's common
  prefix, prefilled once. Rows are laid out as ``[pad][head][pad][suffix]``; ``generate``
  derives positions as ``cumsum(mask) - 1``, so every real token gets the position it has
  without padding. The store is dropped whenever the weights change (checked per call) and
  after calls made while the model is in training mode.
* Length-aware batching: a batch is cut when its longest suffix (prompt minus reused head)
  is much longer than its shortest, so padding waste stays bounded.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
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
    cached: int = 0
    """Leading tokens whose KV the prefix store already holds (0: none usable)."""
    cached_layers: list[tuple[torch.Tensor, torch.Tensor]] | None = None


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def common_prefix_length(a: Sequence[int], b: Sequence[int]) -> int:
    """Number of leading tokens ``a`` and ``b`` share."""
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


# A length split is only worth a separate generate() call when the padding it saves is real:
# below this many tokens of suffix difference, one batch is cheaper than two decode loops.
_PAD_SLACK = 64


@dataclass
class PrefixStats:
    """Prefill accounting of a :class:`TransformersBackend` (cumulative over its calls).

    ``computed_tokens + padding_tokens`` is what prefill actually ran through the model;
    without prefix caching ``computed_tokens == prompt_tokens``.
    """

    batches: int = 0
    """``generate`` calls made."""
    cached_batches: int = 0
    """Calls in which at least one row resumed from a cached head (its own history or the batch's shared prefix)."""
    prompt_tokens: int = 0
    """Sum of the full prompt lengths of all rows."""
    computed_tokens: int = 0
    """Real (non-pad) prompt tokens run through the model: a batch's shared prefix once, each row's uncached rest."""
    padding_tokens: int = 0
    """Pad slots run through prefill."""
    reused_tokens: int = 0
    """Prompt tokens whose KV came from the prefix store instead of being recomputed (summed over rows)."""

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class _PrefixStore:
    """Batch-1 KV caches of recent prompts (and their generated continuations), keyed by token ids.

    Entries are per-layer ``(keys, values)`` tensors of shape ``(1, kv_heads, len, head_dim)``.
    A lookup may use only the first part of an entry: a causal model's KV of the first ``n``
    tokens depends only on those tokens, so a slice of an entry is the cache of its prefix. This
    is what lets every row of a batch resume from its own history: a conversation's next prompt
    extends the previous prompt and reply, and JOSH siblings extend their parent's.

    Bounded by entries and by tokens held; least recently used entries go first.
    """

    def __init__(self, capacity: int, max_tokens: int):
        self.capacity = capacity
        self.max_tokens = max_tokens
        self.entries: OrderedDict[tuple[int, ...], list[tuple[torch.Tensor, torch.Tensor]]] = OrderedDict()
        self._arrays: dict[tuple[int, ...], np.ndarray] = {}
        self.tokens = 0
        self.stamp: Any = None

    def clear(self) -> None:
        self.entries.clear()
        self._arrays.clear()
        self.tokens = 0

    def longest(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, tuple[int, ...] | None]:
        """``(n, key)``: the entry sharing the longest head with ``ids`` (at most ``limit`` tokens)."""
        if not self.entries:
            return 0, None
        query = np.asarray(ids if limit is None else ids[:limit], dtype=np.int64)
        best, best_key = 0, None
        for key, arr in self._arrays.items():
            n = min(len(arr), len(query))
            if n <= best or arr[0] != query[0]:
                continue
            diff = np.flatnonzero(arr[:n] != query[:n])
            common = int(diff[0]) if len(diff) else n
            if common > best:
                best, best_key = common, key
        return best, best_key

    def lookup(self, ids: Sequence[int], limit: int | None = None) -> tuple[int, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """The longest cached head of ``ids``: ``(its length, the cache cut to it)``, or ``(0, None)``."""
        best, key = self.longest(ids, limit)
        if key is None or best == 0:
            return 0, None
        self.entries.move_to_end(key)
        layers = self.entries[key]
        if best < len(key):
            layers = [(k[:, :, :best], v[:, :, :best]) for k, v in layers]
        return best, layers

    def put(self, ids: Sequence[int], layers: list[tuple[torch.Tensor, torch.Tensor]]) -> None:
        if self.capacity <= 0 or len(ids) > self.max_tokens:
            return
        key = tuple(ids)
        if key in self.entries:
            self.entries.move_to_end(key)
            return
        arr = np.asarray(key, dtype=np.int64)
        # An entry that is a head of the new one is subsumed by it (lookups slice).
        for old, old_arr in list(self._arrays.items()):
            if len(old_arr) <= len(arr) and np.array_equal(arr[: len(old_arr)], old_arr):
                self._drop(old)
        self.entries[key] = layers
        self._arrays[key] = arr
        self.tokens += len(key)
        while len(self.entries) > self.capacity or self.tokens > self.max_tokens:
            self._drop(next(iter(self.entries)))

    def _drop(self, key: tuple[int, ...]) -> None:
        del self.entries[key]
        del self._arrays[key]
        self.tokens -= len(key)


def _preallocated_layer(capacity: int) -> Any:
    """A ``DynamicLayer`` that reserves room for ``capacity`` tokens up front.

    The stock layer concatenates its whole cache at every decoding step, so a step costs a copy
    of rows x context: with 2,000-token agent prompts that copy, not the model, dominates
    decoding on CPU. Here a step writes its new keys/values in place and exposes a view.
    """
    from transformers.cache_utils import DynamicLayer

    class _PreallocatedLayer(DynamicLayer):
        _layer_type = None  # never register this class as the default for a layer type

        def __init__(self) -> None:
            super().__init__()
            self._buffers: tuple[torch.Tensor, torch.Tensor] | None = None

        def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any, **kwargs: Any):
            if not self.is_initialized:
                self.lazy_initialization(key_states, value_states)
            old = self.get_seq_length()
            new = old + key_states.shape[-2]
            buffers = self._buffers
            # Reallocate when full, or when crop()/batch_select_indices() replaced the tensors.
            stale = (
                buffers is None
                or new > buffers[0].shape[-2]
                or buffers[0].shape[0] != key_states.shape[0]
                or (old > 0 and self.keys.data_ptr() != buffers[0].data_ptr())
            )
            if stale:
                size = max(new, capacity)
                keys = key_states.new_empty((*key_states.shape[:2], size, key_states.shape[-1]))
                values = value_states.new_empty((*value_states.shape[:2], size, value_states.shape[-1]))
                if old:
                    keys[:, :, :old] = self.keys
                    values[:, :, :old] = self.values
                buffers = self._buffers = (keys, values)
            buffers[0][:, :, old:new] = key_states
            buffers[1][:, :, old:new] = value_states
            self.keys, self.values = buffers[0][:, :, :new], buffers[1][:, :, :new]
            return self.keys, self.values

    return _PreallocatedLayer()


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
        prefix_cache: bool = True,
        min_prefix_tokens: int = 64,
        prefix_cache_entries: int = 256,
        prefix_cache_tokens: int = 1 << 19,
        max_pad_ratio: float | None = 4.0,
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
        self.prefix_cache = prefix_cache
        """Reuse KV caches: each row resumes from the longest cached head of its prompt (kept
        across calls: earlier prompts and their replies), and a batch's shared head is prefilled
        once."""
        self.min_prefix_tokens = min_prefix_tokens
        """Shorter shared prefixes are not worth a separate prefill: plain left padding is used."""
        self.max_pad_ratio = max_pad_ratio
        """Cut a batch when its longest suffix exceeds this many times its shortest (None: never)."""
        self.prefix_stats = PrefixStats()
        self._prefix_store = _PrefixStore(prefix_cache_entries, prefix_cache_tokens)
        self._prefix_supported: bool | None = None
        self._keep_replies = True
        self._kv_layers: int | None = None

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
        """Group by the settings one ``generate`` call shares, sort by what each row must prefill
        (its prompt minus the head it can reuse: its own cached history or the group's shared
        prefix), longest first, and cut under the budgets; with ``max_pad_ratio``, also cut
        where those suffixes grow too unequal, since the shorter rows would mostly prefill
        padding."""
        groups: dict[tuple[int, tuple[str, ...]], list[_Prepared]] = defaultdict(list)
        for item in prepared:
            sampling = item.request.sampling
            groups[(sampling.max_new_tokens, tuple(sampling.stop))].append(item)
        batches: list[list[_Prepared]] = []
        for (max_new, _), items in groups.items():
            shared = self._shared_prefix_length(items) if self.max_pad_ratio is not None else 0

            def suffix(item: _Prepared, shared: int = shared) -> int:
                return len(item.ids) - max(item.cached, shared)

            items = sorted(items, key=lambda it: (suffix(it), len(it.ids)), reverse=True)
            batch: list[_Prepared] = []
            longest = 0
            for item in items:
                new_longest = max(longest, len(item.ids))
                cost = (len(batch) + 1) * (new_longest + max_new)
                # Sorted longest suffix first: batch[0] holds the longest, item the shortest.
                uneven = False
                if batch and self.max_pad_ratio is not None:
                    top, low = suffix(batch[0]), suffix(item)
                    uneven = top > self.max_pad_ratio * low and top - low > _PAD_SLACK
                if batch and (cost > self.max_batch_tokens or len(batch) >= self.max_batch_size or uneven):
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
        self._check_prefix_store()
        if self.prefix_cache and prepared and self._supports_prefix_cache():
            for item in prepared:
                # At least one prompt token must be fed: it produces the first logits.
                hit, layers = self._prefix_store.lookup(item.ids, limit=len(item.ids) - 1)
                if hit >= max(self.min_prefix_tokens, 1):
                    item.cached, item.cached_layers = hit, layers
        # Replies are worth keeping only while the weights stay as they are (eval, not training).
        self._keep_replies = not was_training
        self.model.eval()
        try:
            with torch.inference_mode():
                for batch in self.plan_batches(prepared):
                    for item, out in zip(batch, self._run_batch(batch)):
                        outputs[item.index] = out
        finally:
            for item in prepared:
                item.cached_layers = None  # views into the store: let evicted entries go
            if was_training:
                self.model.train()
                # A model in training is about to be updated: its cached prefixes would be stale
                # anyway, so give their memory back to the training step now.
                self._prefix_store.clear()
        return [out if out is not None else GenerationOutput(text="", error="not generated") for out in outputs]

    def clear_prefix_cache(self) -> None:
        """Forget the prefix KV caches kept across calls (e.g. after changing weights by hand in a
        way the version check cannot see, such as swapping ``.data``)."""
        self._prefix_store.clear()

    def _weights_stamp(self) -> Any:
        """Changes whenever the weights (or the active adapter) may have changed.

        Every in-place update (optimizer steps, ``load_state_dict``, ``copy_``) bumps a tensor's
        version counter; ``.to()`` changes device/dtype. Cheap: one pass over the parameter list.
        """
        params = list(self.model.parameters())
        first = params[0] if params else None
        try:
            adapters = tuple(getattr(self.model, "active_adapters", ()) or ())
        except Exception:  # noqa: BLE001 - a non-PEFT model may raise on this attribute
            adapters = ()
        return (
            id(self.model),
            len(params),
            sum(p._version for p in params),
            None if first is None else (str(first.device), first.dtype),
            adapters,
        )

    def _check_prefix_store(self) -> None:
        """Drop cross-call prefix caches computed with other weights (the trainer updates the
        policy between calls)."""
        if not self.prefix_cache and not self._prefix_store.entries:
            return
        stamp = self._weights_stamp()
        if stamp != self._prefix_store.stamp:
            self._prefix_store.clear()
            self._prefix_store.stamp = stamp

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

    # ------------------------------------------------------------------------- prefix caching

    def _supports_prefix_cache(self) -> bool:
        """Prefix caching needs plain, growable full-attention KV layers (sliced and expanded by
        batch). Sliding-window / linear-attention caches, encoder-decoders and PEFT prompt
        learning (virtual tokens prepended inside forward) fall back to plain left padding."""
        if self._prefix_supported is None:
            from transformers import DynamicCache
            from transformers.cache_utils import DynamicLayer

            ok = True
            config = getattr(self.model, "config", None)
            if config is None or getattr(config, "is_encoder_decoder", False):
                ok = False
            peft_config = getattr(self.model, "active_peft_config", None)
            if ok and peft_config is not None and getattr(peft_config, "is_prompt_learning", False):
                ok = False
            if ok:
                try:
                    layers = DynamicCache(config=self._text_config()).layers
                    ok = all(type(layer) is DynamicLayer for layer in layers)
                except Exception:  # noqa: BLE001 - an unusual config: don't risk it
                    ok = False
            if not ok:
                logger.info("prefix caching is not supported for this model; using plain left padding")
            self._prefix_supported = ok
        return self._prefix_supported

    def _text_config(self) -> Any:
        config = self.model.config
        return config.get_text_config(decoder=True) if hasattr(config, "get_text_config") else config

    def _head_kwargs(self) -> dict[str, Any]:
        """Only the cache of a prefix is wanted: skip the LM head on all but one position when
        the model's forward allows it (a 150k vocabulary over 2,000 positions is not free)."""
        import inspect

        base = self.model.get_base_model() if hasattr(self.model, "get_base_model") else self.model
        try:
            accepted = "logits_to_keep" in inspect.signature(base.forward).parameters
        except (TypeError, ValueError):
            accepted = False
        return {"logits_to_keep": 1} if accepted else {}

    def _shared_prefix_length(self, batch: Sequence[_Prepared]) -> int:
        """Tokens every row of ``batch`` shares and that are worth prefilling once (0: none).

        Each row keeps at least one suffix token: generate() needs a new input to produce the
        first logits.
        """
        if not self.prefix_cache or not batch or not self._supports_prefix_cache():
            return 0
        first = batch[0].ids
        shared = min(common_prefix_length(first, item.ids) for item in batch)
        shared = min(shared, min(len(item.ids) for item in batch) - 1)
        return shared if shared >= max(self.min_prefix_tokens, 1) else 0

    def _prefix_layers(self, prefix: list[int]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Batch-1 KV of ``prefix``: taken from the LRU as far as it goes, the rest computed."""
        from transformers import DynamicCache

        reused, layers = self._prefix_store.lookup(prefix)
        self.prefix_stats.reused_tokens += reused
        if reused == len(prefix) and layers is not None:
            return layers
        cache = DynamicCache(ddp_cache_data=layers, config=self._text_config())
        device = self.device
        ids = torch.tensor([prefix[reused:]], dtype=torch.long, device=device)
        positions = torch.arange(reused, len(prefix), dtype=torch.long, device=device)[None]
        self.model(input_ids=ids, position_ids=positions, past_key_values=cache, use_cache=True, **self._head_kwargs())
        self.prefix_stats.computed_tokens += len(prefix) - reused
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        self._prefix_store.put(prefix, layers)
        return layers

    def _layout(self, batch: list[_Prepared]) -> tuple[torch.Tensor, torch.Tensor, Any, list[int]]:
        """``input_ids``, ``attention_mask``, the pre-filled cache (None without prefix caching)
        and each row's reused head length.

        Row ``r`` reuses ``c_r`` tokens (its own cached history, or the batch's shared prefix
        prefilled once) and prefills the rest. Columns: ``[pad][head_r | C][pad][suffix_r]``,
        heads right-aligned at column ``C = max c_r``, suffixes right-aligned at the end, where
        decoding starts; generate() derives positions as ``cumsum(mask) - 1``, so every real
        token gets the position it has without padding. Without any reuse this is plain left
        padding.
        """
        from transformers import DynamicCache

        stats = self.prefix_stats
        stats.batches += 1
        stats.prompt_tokens += sum(len(item.ids) for item in batch)
        caching = self.prefix_cache and self._supports_prefix_cache()
        heads = [item.cached if caching else 0 for item in batch]
        sources: list[list[tuple[torch.Tensor, torch.Tensor]] | None] = [item.cached_layers for item in batch]
        shared = self._shared_prefix_length(batch) if caching else 0
        if shared and any(h < shared for h in heads):
            shared_layers = self._prefix_layers(batch[0].ids[:shared])
            for row, head in enumerate(heads):
                if head < shared:
                    heads[row], sources[row] = shared, shared_layers
        for row, head in enumerate(heads):
            if head and sources[row] is batch[row].cached_layers:
                stats.reused_tokens += head
        head_width = max(heads)
        suffixes = [item.ids[head:] for item, head in zip(batch, heads)]
        suffix_width = max(len(x) for x in suffixes)
        width = head_width + suffix_width
        input_ids = torch.full((len(batch), width), self.pad_token_id, dtype=torch.long)
        attention_mask = torch.zeros((len(batch), width), dtype=torch.long)
        for row, (item, head, suffix) in enumerate(zip(batch, heads, suffixes)):
            if head:
                input_ids[row, head_width - head : head_width] = torch.tensor(item.ids[:head], dtype=torch.long)
                attention_mask[row, head_width - head : head_width] = 1
            input_ids[row, width - len(suffix) :] = torch.tensor(suffix, dtype=torch.long)
            attention_mask[row, width - len(suffix) :] = 1
        real = sum(len(x) for x in suffixes)
        stats.computed_tokens += real
        stats.padding_tokens += len(batch) * suffix_width - real
        if not caching:
            return input_ids, attention_mask, None, heads
        if head_width:
            stats.cached_batches += 1
        # Room for the prompt and every new token, so decoding writes in place.
        capacity = width + batch[0].request.sampling.max_new_tokens
        cache = DynamicCache(config=self._text_config())
        cache.layers = [_preallocated_layer(capacity) for _ in range(self._num_layers())]
        if head_width:
            device = self.device
            for index, layer in enumerate(cache.layers):
                keys = values = None
                for row, (head, layers) in enumerate(zip(heads, sources)):
                    if not head:
                        continue
                    k, v = layers[index]
                    if keys is None:
                        keys = k.new_zeros((len(batch), k.shape[1], head_width, k.shape[3]))
                        values = v.new_zeros((len(batch), v.shape[1], head_width, v.shape[3]))
                    keys[row, :, head_width - head :] = k[0, :, :head]
                    values[row, :, head_width - head :] = v[0, :, :head]
                layer.update(keys.to(device), values.to(device))
        return input_ids, attention_mask, cache, heads

    def _num_layers(self) -> int:
        """KV layers of the model's cache (computed once: building a cache per batch is waste)."""
        if self._kv_layers is None:
            from transformers import DynamicCache

            self._kv_layers = len(DynamicCache(config=self._text_config()).layers)
        return self._kv_layers

    def _keep_rows(self, batch: list[_Prepared], cache: Any, attention_mask: torch.Tensor, generated: list[list[int]]) -> None:
        """Put each row's prompt + reply KV into the prefix store, so the row's next call (the
        conversation's next turn, or a JOSH child's) prefills only what is new."""
        length = cache.get_seq_length()
        width = attention_mask.shape[1]
        eos = set(self.eos_token_ids)
        layers = [(layer.keys, layer.values) for layer in cache.layers]
        for row, (item, tokens) in enumerate(zip(batch, generated)):
            # Tokens fed back so far (the last sampled token never was), up to the row's end.
            fed = tokens[: max(length - width, 0)]
            end = next((i + 1 for i, tok in enumerate(fed) if tok in eos), len(fed))
            fed = fed[:end]
            columns = torch.cat(
                [attention_mask[row].nonzero().squeeze(-1), torch.arange(width, width + len(fed))]
            ).to(layers[0][0].device)
            kept = [(k[row : row + 1, :, columns].clone(), v[row : row + 1, :, columns].clone()) for k, v in layers]
            self._prefix_store.put(item.ids + fed, kept)

    def _generate_batch(self, batch: list[_Prepared]) -> list[GenerationOutput]:
        from transformers import GenerationConfig

        self.batch_sizes.append(len(batch))
        sampling = batch[0].request.sampling
        input_ids, attention_mask, cache, _ = self._layout(batch)
        width = input_ids.shape[1]
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
        if cache is not None:
            # generate() sees the full rows and the full mask: it derives positions as
            # cumsum(mask) - 1 (so suffix positions skip the padding) and prefills only the
            # columns the cache does not hold yet.
            extra["past_key_values"] = cache
        sequences = self.model.generate(
            input_ids=input_ids.to(device),
            attention_mask=attention_mask.to(device),
            generation_config=gen_config,
            logits_processor=processors,
            **extra,
        )
        generated = sequences[:, width:].tolist()
        if cache is not None and self._keep_replies and self._prefix_store.capacity > 0:
            self._keep_rows(batch, cache, attention_mask, generated)
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
