"""Text generation for :class:`~mmhelpers.vlm.MiniVLM`: greedy, sampling (temperature, top-k, top-p) and beam search.

Every strategy runs with or without the key-value cache (``use_cache``) and gives the same tokens either
way; :func:`time_generation` measures what the cache saves. Sequences stop at EOS and are padded with
``pad_id`` after it; generation ends early once every sequence has stopped.
"""

from __future__ import annotations

import math
import time

import torch
import torch.nn.functional as F
from torch import Tensor

from mmhelpers.vlm import KVCache, MiniVLM

__all__ = ["STRATEGIES", "filter_logits", "generate", "time_generation"]

STRATEGIES = ("greedy", "sample", "beam")


def _check_filters(top_k: int | None, top_p: float | None) -> None:
    """ValueError unless top_k is None or an int >= 1 and top_p is None or in (0, 1]."""
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be None (no limit) or an int >= 1, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be None (no nucleus) or in (0, 1], got {top_p!r}")


def filter_logits(logits: Tensor, top_k: int | None = None, top_p: float | None = None) -> Tensor:
    """Logits (..., V) with -inf outside the top-k and outside the nucleus (smallest set with probability >= top_p).

    Ties with the k-th largest logit are kept. The most likely token always survives top-p.
    """
    _check_filters(top_k, top_p)
    out = logits.clone()
    if top_k is not None and top_k < logits.size(-1):
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]  # (..., 1)
        out = out.masked_fill(out < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        probs, order = F.softmax(out, dim=-1).sort(dim=-1, descending=True)  # (..., V)
        mass_before = probs.cumsum(dim=-1) - probs  # probability of the tokens ranked above each one
        drop_sorted = mass_before >= top_p  # the nucleus is already complete without this token
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        out = out.masked_fill(drop, float("-inf"))
    return out


class _NextLogits:
    """Next-token logits (B, V) for growing sequences, from a KV cache or by re-running the whole sequence."""

    def __init__(
        self, model: MiniVLM, visual_tokens: Tensor | None, use_cache: bool, prefix_bias: Tensor | None = None
    ):
        self.model, self.visual_tokens, self.use_cache = model, visual_tokens, use_cache
        self.prefix_bias = prefix_bias
        self.cache: KVCache | None = None

    def __call__(self, seqs: Tensor) -> Tensor:
        """seqs (B, T): every token so far -> logits (B, V) for the token after them."""
        if not self.use_cache:
            return self.model(seqs, visual_tokens=self.visual_tokens, prefix_bias=self.prefix_bias)[0][:, -1]
        if self.cache is None:
            self.cache = self.model.new_cache(self.visual_tokens, self.prefix_bias)
        return self.model.forward_step(seqs[:, self.cache.n_text :], self.cache)[:, -1]

    def reorder(self, index: Tensor) -> None:
        """Follow a reordering of the batch rows (beam search)."""
        if self.visual_tokens is not None:
            self.visual_tokens = self.visual_tokens.index_select(0, index)
        if self.prefix_bias is not None:
            self.prefix_bias = self.prefix_bias.index_select(0, index)
        if self.cache is not None:
            self.cache.reorder(index)


def _greedy_or_sample(
    step: _NextLogits,
    prompt: Tensor,
    max_new_tokens: int,
    sample: bool,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    eos_id: int,
    pad_id: int,
    generator: torch.Generator | None,
) -> Tensor:
    """Extend prompt (B, T0) one token at a time; rows that have emitted EOS continue with pad_id."""
    seqs, done = prompt, torch.zeros(prompt.shape[0], dtype=torch.bool, device=prompt.device)
    for _ in range(max_new_tokens):
        logits = step(seqs).float()  # (B, V)
        if sample and temperature > 0:
            probs = F.softmax(filter_logits(logits / temperature, top_k, top_p), dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (B,)
        else:
            nxt = logits.argmax(dim=-1)
        nxt = nxt.masked_fill(done, pad_id)
        seqs = torch.cat([seqs, nxt[:, None]], dim=1)
        done = done | (nxt == eos_id)
        if done.all():
            break
    return seqs


def _beam_search(
    step: _NextLogits, prompt: Tensor, max_new_tokens: int, num_beams: int, eos_id: int, pad_id: int
) -> Tensor:
    """Keep the num_beams continuations with the best mean log-probability per generated token; return the best."""
    B, K, device = prompt.shape[0], num_beams, prompt.device
    seqs = prompt.repeat_interleave(K, dim=0)  # (B*K, T0)
    step.reorder(torch.arange(B, device=device).repeat_interleave(K))  # K copies of each item's visual tokens
    score = torch.full((B, K), float("-inf"), device=device)  # summed log-probs of each beam
    score[:, 0] = 0.0  # all beams start identical: keep one so the first step does not pick duplicates
    length = torch.zeros(B, K, device=device)  # generated tokens, EOS included
    done = torch.zeros(B, K, dtype=torch.bool, device=device)
    offset = torch.arange(B, device=device)[:, None] * K  # (B, 1) first row of each item's beams
    for _ in range(max_new_tokens):
        logp = F.log_softmax(step(seqs).float(), dim=-1).view(B, K, -1)  # (B, K, V)
        V = logp.size(-1)
        stay = torch.full((V,), float("-inf"), device=device)
        stay[pad_id] = 0.0  # a finished beam can only be continued by padding, at no cost and no length
        logp = torch.where(done[..., None], stay, logp)
        total = score[..., None] + logp  # (B, K, V)
        new_length = (length + (~done).float())[..., None].clamp(min=1.0)  # (B, K, 1)
        flat = (total / new_length).view(B, K * V).topk(K, dim=-1).indices  # (B, K) best normalised candidates
        beam, tok = flat // V, flat % V
        score = total.view(B, K * V).gather(1, flat)
        length = new_length.squeeze(-1).gather(1, beam)
        done = done.gather(1, beam) | (tok == eos_id)
        rows = (offset + beam).view(-1)  # (B*K,) source rows
        seqs = torch.cat([seqs.index_select(0, rows), tok.view(-1, 1)], dim=1)
        step.reorder(rows)
        if done.all():
            break
    best = (score / length.clamp(min=1.0)).argmax(dim=-1)  # (B,)
    return seqs.view(B, K, -1)[torch.arange(B, device=device), best]


@torch.no_grad()
def generate(
    model: MiniVLM,
    visual: Tensor | None,
    prompt: Tensor,
    max_new_tokens: int,
    strategy: str = "greedy",
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    num_beams: int = 4,
    use_cache: bool = True,
    eos_id: int | None = None,
    generator: torch.Generator | None = None,
    prefix_bias: Tensor | None = None,
) -> Tensor:
    """Continue prompt (B, T0) by up to max_new_tokens; returns (B, T0 + new) ids, pad_id after each EOS.

    visual (B, N, d_visual) or None (text only); it is projected once. All prompts in the batch have the
    same length (no padding inside prompts). ``strategy``: "greedy", "sample" (temperature, then top-k
    and/or top-p; ``temperature=0`` is greedy; ``generator`` makes it reproducible) or "beam" (beams
    ranked by summed log-probability divided by the number of generated tokens; ``num_beams=1`` is
    greedy). ``eos_id`` defaults to ``model.cfg.eos_id``; pass -1 to never stop early. The model runs
    in eval mode and is put back in its previous mode afterwards. ``prefix_bias`` (B, nh, N, N): a bias on the
    visual tokens' attention among themselves (prefix fusion; e.g. the VQA model's distance bias, ``model.prefix``).

    Arguments are checked whatever the strategy: max_new_tokens >= 0 (0 returns the prompt), a finite
    temperature >= 0 (0: greedy), top_k None or >= 1, top_p None or in (0, 1] (1: no nucleus); else ValueError.
    """
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {STRATEGIES}, got {strategy!r}")
    if isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int) or max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be an int >= 0, got {max_new_tokens!r}")
    if not (math.isfinite(temperature) and temperature >= 0):
        raise ValueError(
            f"temperature must be a finite number >= 0 (0 means greedy; > 0 samples, higher is more random), "
            f"got {temperature!r}"
        )
    _check_filters(top_k, top_p)
    if prompt.dim() != 2 or prompt.shape[1] == 0:
        raise ValueError(f"prompt must be (B, T0) with T0 >= 1, got {tuple(prompt.shape)}")
    if prompt.shape[1] + max_new_tokens - 1 > model.cfg.block_size:
        raise ValueError(f"prompt {prompt.shape[1]} + {max_new_tokens} new tokens exceed block_size + 1")
    if strategy == "beam" and num_beams < 1:
        raise ValueError(f"num_beams must be >= 1, got {num_beams}")
    eos_id = model.cfg.eos_id if eos_id is None else eos_id
    was_training = model.training
    model.eval()
    try:
        step = _NextLogits(model, None if visual is None else model.encode_visual(visual), use_cache, prefix_bias)
        pad_id, sample = model.cfg.pad_id, strategy == "sample"
        if strategy == "beam":
            return _beam_search(step, prompt, max_new_tokens, num_beams, eos_id, pad_id)
        return _greedy_or_sample(
            step, prompt, max_new_tokens, sample, temperature, top_k, top_p, eos_id, pad_id, generator
        )
    finally:
        model.train(was_training)


def time_generation(
    model: MiniVLM, visual: Tensor | None, prompt: Tensor, max_new_tokens: int, repeats: int = 3
) -> dict[str, float | int | bool]:
    """Greedy generation with and without the KV cache (EOS ignored): best-of-``repeats`` wall time and the work done.

    ``*_positions`` counts the positions the first decoder block processes in one generation (batch rows
    times sequence length, summed over calls, the prefix's once-only pass included): a count that does not
    depend on the machine's load, unlike the times. ``work_ratio`` is uncached over cached positions.
    """
    times: dict[bool, float] = {}
    outputs: dict[bool, Tensor] = {}
    positions: dict[bool, int] = {}
    counted: list[int] = []
    hook = model.blocks[0].register_forward_hook(
        lambda _m, args, _out: counted.append(args[0].shape[0] * args[0].shape[1])
    )
    try:
        for use_cache in (True, False):
            best = float("inf")
            for _ in range(repeats):
                counted.clear()
                t0 = time.perf_counter()
                outputs[use_cache] = generate(model, visual, prompt, max_new_tokens, use_cache=use_cache, eos_id=-1)
                best = min(best, time.perf_counter() - t0)
            times[use_cache], positions[use_cache] = best, sum(counted)
    finally:
        hook.remove()
    return {
        "cached_s": times[True],
        "uncached_s": times[False],
        "speedup": times[False] / times[True],
        "cached_positions": positions[True],
        "uncached_positions": positions[False],
        "work_ratio": positions[False] / positions[True],
        "identical": bool(torch.equal(outputs[True], outputs[False])),
    }
