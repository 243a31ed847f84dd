"""A small GPT-4-style vision-language model: visual tokens -> projector -> causal Transformer decoder.

Two fusion designs share one class, picked by ``VLMConfig.fusion``:

* ``"prefix"`` (LLaVA-like, with a prefix-LM mask as in PaliGemma): the projected visual tokens are
  prepended to the text; they attend to each other in both directions, text attends to the whole prefix
  and causally to earlier text. See :func:`attention_mask`.
* ``"cross"`` (Flamingo / encoder-decoder): the decoder sequence is text only; every block runs causal
  self-attention, then cross-attention to the visual tokens, then the MLP. The cross-attention output is
  scaled by ``tanh(gate)`` with the gate starting at 0 (``gated_cross=True``, Flamingo), so a pre-trained
  language model starts out unchanged.

Text positions always start at 0 (the prefix has its own position embedding in the :class:`Projector`),
so the weights of a text-only pre-trained model transfer unchanged (:meth:`MiniVLM.load_language_model_`).
Incremental decoding uses a :class:`KVCache` (:meth:`MiniVLM.new_cache`, :meth:`MiniVLM.forward_step`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "FUSIONS",
    "PROJECTORS",
    "VLMConfig",
    "KVCache",
    "grid_to_tokens",
    "attention_mask",
    "with_prefix_bias",
    "Projector",
    "MiniVLM",
]

FUSIONS = ("prefix", "cross")
PROJECTORS = ("linear", "mlp", "queries")


@dataclass
class VLMConfig:
    """Sizes and design choices of :class:`MiniVLM` (defaults: a ~2M-parameter decoder over 7x7 EfficientNet cells)."""

    vocab_size: int
    block_size: int = 32  # max text tokens (incl. BOS)
    n_layer: int = 4
    n_head: int = 4
    n_embd: int = 192
    dropout: float = 0.1
    fusion: str = "prefix"  # "prefix" | "cross"
    d_visual: int = 1280  # channels of each incoming visual token
    n_visual: int = 49  # number of incoming visual tokens (each position gets a learned embedding)
    projector: str = "mlp"  # "linear" | "mlp" | "queries" (learned queries cross-attend to the visual tokens)
    n_queries: int = 8  # output tokens of the "queries" projector
    gated_cross: bool = True  # cross fusion: tanh(gate) * cross-attention, gate initialised to 0 (Flamingo)
    pad_id: int = 0
    bos_id: int = 1
    eos_id: int = 2

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ValueError(f"fusion must be one of {FUSIONS}, got {self.fusion!r}")
        if self.projector not in PROJECTORS:
            raise ValueError(f"projector must be one of {PROJECTORS}, got {self.projector!r}")
        if self.n_embd % self.n_head != 0:
            raise ValueError(f"n_embd ({self.n_embd}) must be divisible by n_head ({self.n_head})")


@dataclass
class KVCache:
    """Keys and values the decoder has already computed, one entry per layer, for incremental decoding."""

    k: list[Tensor | None]  # per layer (B, nh, S, hs): the prefix positions first, then the text
    v: list[Tensor | None]
    memory: list[tuple[Tensor, Tensor]] | None = None  # cross fusion: per-layer visual keys, values (B, nh, P, hs)
    n_prefix: int = 0  # visual prefix positions held in k, v (prefix fusion)
    n_text: int = 0  # text positions held in k, v
    # the prefix's hidden states after each block (B, P, C), kept on request (``new_cache(..., keep_states=True)``),
    # e.g. for an auxiliary loss on the visual tokens
    states: list[Tensor] | None = None

    def reorder(self, index: Tensor) -> None:
        """Select batch rows in place (beam search): every cached tensor is indexed by ``index`` along dim 0."""
        self.k = [None if t is None else t.index_select(0, index) for t in self.k]
        self.v = [None if t is None else t.index_select(0, index) for t in self.v]
        if self.memory is not None:
            self.memory = [(k.index_select(0, index), v.index_select(0, index)) for k, v in self.memory]
        if self.states is not None:
            self.states = [x.index_select(0, index) for x in self.states]


def grid_to_tokens(grid: Tensor) -> Tensor:
    """Feature map (B, C, H, W) -> visual tokens (B, H*W, C), cells in row-major order."""
    return grid.flatten(2).transpose(1, 2)


def attention_mask(n_prefix: int, t: int, fusion: str = "prefix", device: torch.device | str | None = None) -> Tensor:
    """Boolean self-attention mask of the decoder, True where query i may attend to key j.

    ``"prefix"``: the sequence is ``[n_prefix visual tokens; t text tokens]`` and the mask is
    (n_prefix + t, n_prefix + t): prefix rows see the whole prefix (bidirectional) and no text; text
    rows see the whole prefix and the text up to themselves (causal). ``"cross"``: the visual tokens
    are not in the decoder's sequence (they are reached through cross-attention, which sees all of
    them), so the mask is the causal (t, t) one and ``n_prefix`` is ignored.
    """
    if fusion not in FUSIONS:
        raise ValueError(f"fusion must be one of {FUSIONS}, got {fusion!r}")
    n = t if fusion == "cross" else n_prefix + t
    mask = torch.ones(n, n, dtype=torch.bool, device=device).tril()  # causal
    if fusion == "prefix":
        mask[:n_prefix, :n_prefix] = True  # the prefix attends to itself in both directions
    return mask


def with_prefix_bias(mask: Tensor, prefix_bias: Tensor | None) -> Tensor:
    """A boolean (T, T) mask whose first P positions are the visual prefix, plus an additive bias (B, nh, P, P) on
    the prefix's attention to itself -> a float mask (B, nh, T, T) (0 / -inf elsewhere); no bias: the mask as is.

    A relative-position bias among the visual tokens (Swin, Graphormer), e.g. one from their distances in the image.
    """
    if prefix_bias is None:
        return mask
    P = prefix_bias.shape[-1]
    out = torch.zeros(mask.shape, dtype=prefix_bias.dtype, device=mask.device).masked_fill(~mask, float("-inf"))
    out = out.expand(*prefix_bias.shape[:-2], *mask.shape).clone()  # (B, nh, T, T)
    out[..., :P, :P] += prefix_bias
    return out


def _attend(
    q: Tensor, k: Tensor, v: Tensor, mask: Tensor | None, dropout_p: float, need_weights: bool
) -> tuple[Tensor, Tensor | None]:
    """softmax(q k^T / sqrt(hs) + mask) v over heads, with SDPA; the explicit weights (B, nh, Tq, Tk) only on request.

    ``mask``: boolean (True = may attend), or float and added to the scores (0 / -inf, plus any bias)."""
    if mask is not None and mask.is_floating_point():
        mask = mask.to(q.dtype)  # SDPA wants a float mask in the queries' dtype (bf16 under autocast)
    if not need_weights:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p), None
    att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(k.size(-1)))  # (B, nh, Tq, Tk)
    if mask is not None:
        att = att.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else att + mask
    att = F.softmax(att, dim=-1)
    return att @ v, att


class SelfAttention(nn.Module):
    """Multi-head self-attention under a boolean mask; appends its keys/values to a cache's when given one."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.c_attn = nn.Linear(cfg.n_embd, 3 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
        n_query: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], Tensor | None]:
        """x (B, T, C), mask (T, S + T) -> (out (B, Tq, C), (k, v) (B, nh, S + T, hs), weights or None).

        Keys and values are computed for all T positions; with ``n_query`` only the last ``n_query`` positions
        query (Tq = n_query, else T), e.g. in the last layer when only the last position's output is needed.
        """
        B, T, C = x.shape
        q, k, v = self.c_attn(x).split(C, dim=2)
        q, k, v = (z.view(B, T, self.n_head, C // self.n_head).transpose(1, 2) for z in (q, k, v))  # (B, nh, T, hs)
        if n_query is not None:
            q, mask = q[:, :, -n_query:], mask[..., -n_query:, :]  # (B, nh, Tq, hs), (..., Tq, S + T)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, nh, S + T, hs)
        y, w = _attend(q, k, v, mask, self.dropout if self.training else 0.0, need_weights)
        y = y.transpose(1, 2).contiguous().view(B, q.shape[2], C)
        return self.resid_drop(self.c_proj(y)), (k, v), w


class CrossAttention(nn.Module):
    """Multi-head attention from x to a memory of context tokens (keys/values computed once by ``memory``)."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.n_head, self.dropout = cfg.n_head, cfg.dropout
        self.q = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.kv = nn.Linear(cfg.n_embd, 2 * cfg.n_embd)
        self.c_proj = nn.Linear(cfg.n_embd, cfg.n_embd)
        self.resid_drop = nn.Dropout(cfg.dropout)

    def memory(self, context: Tensor) -> tuple[Tensor, Tensor]:
        """Context (B, P, C) -> keys, values (B, nh, P, hs)."""
        B, P, C = context.shape
        k, v = self.kv(context).split(C, dim=2)
        return tuple(z.view(B, P, self.n_head, C // self.n_head).transpose(1, 2) for z in (k, v))

    def forward(
        self, x: Tensor, memory: tuple[Tensor, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (out (B, T, C), weights (B, nh, T, P) or None)."""
        B, T, C = x.shape
        q = self.q(x).view(B, T, self.n_head, C // self.n_head).transpose(1, 2)  # (B, nh, T, hs)
        y, w = _attend(q, *memory, None, self.dropout if self.training else 0.0, need_weights)
        y = y.transpose(1, 2).contiguous().view(B, T, C)
        return self.resid_drop(self.c_proj(y)), w


class GatedCrossAttention(nn.Module):
    """Pre-norm cross-attention to the visual tokens, times tanh(gate) with the gate at 0 initially (Flamingo)."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.ln_v = nn.LayerNorm(cfg.n_embd)  # normalises the visual tokens once, before their keys/values
        self.ln = nn.LayerNorm(cfg.n_embd)
        self.attn = CrossAttention(cfg)
        self.gate = nn.Parameter(torch.zeros(1)) if cfg.gated_cross else None

    def memory(self, visual_tokens: Tensor) -> tuple[Tensor, Tensor]:
        """Projected visual tokens (B, P, C) -> this layer's keys, values (B, nh, P, hs)."""
        return self.attn.memory(self.ln_v(visual_tokens))

    def forward(
        self, x: Tensor, memory: tuple[Tensor, Tensor], need_weights: bool = False
    ) -> tuple[Tensor, Tensor | None]:
        """x (B, T, C) -> (residual update (B, T, C), weights (B, nh, T, P) or None)."""
        y, w = self.attn(self.ln(x), memory, need_weights)
        return (y if self.gate is None else torch.tanh(self.gate) * y), w


class MLP(nn.Module):
    """Linear (4x) -> GELU -> Linear -> dropout."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.c_fc = nn.Linear(cfg.n_embd, 4 * cfg.n_embd)
        self.c_proj = nn.Linear(4 * cfg.n_embd, cfg.n_embd)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, C) -> (B, T, C)."""
        return self.drop(self.c_proj(F.gelu(self.c_fc(x))))


class Block(nn.Module):
    """Pre-norm decoder block: self-attention, then (cross fusion) gated cross-attention, then MLP."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.n_embd)
        self.attn = SelfAttention(cfg)
        self.cross = GatedCrossAttention(cfg) if cfg.fusion == "cross" else None
        self.ln_2 = nn.LayerNorm(cfg.n_embd)
        self.mlp = MLP(cfg)

    def forward(
        self,
        x: Tensor,
        mask: Tensor,
        past: tuple[Tensor, Tensor] | None = None,
        memory: tuple[Tensor, Tensor] | None = None,
        need_weights: bool = False,
        n_query: int | None = None,
    ) -> tuple[Tensor, tuple[Tensor, Tensor], tuple[Tensor | None, Tensor | None]]:
        """x (B, T, C) -> (x (B, T or n_query, C), this layer's (k, v), (self-attention, cross-attention weights)).

        With ``n_query`` only the last ``n_query`` positions come out (their keys and values all go in the cache).
        """
        a, kv, w_self = self.attn(self.ln_1(x), mask, past, need_weights, n_query)
        x = (x if n_query is None else x[:, -n_query:]) + a
        w_cross = None
        if self.cross is not None and memory is not None:  # memory None = text only: the layer is skipped
            c, w_cross = self.cross(x, memory, need_weights)
            x = x + c
        x = x + self.mlp(self.ln_2(x))
        return x, kv, (w_self, w_cross)


class Projector(nn.Module):
    """Visual tokens (B, N, d_visual) -> (B, N or n_queries, n_embd), with a learned embedding per visual position.

    Each token goes through a Linear to n_embd and gets its position's embedding added (the only place
    the decoder learns where a token sits), before any non-linearity or token mixing.
    ``"linear"``: just that. ``"mlp"``: then GELU -> Linear (LLaVA-1.5's two layers). ``"queries"``:
    then ``n_queries`` learned queries cross-attend to the N tokens and pass an MLP (a one-layer
    Q-Former / Perceiver resampler), giving a fixed number of output tokens whatever N is.
    """

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.kind, self.n_visual = cfg.projector, cfg.n_visual
        self.fc = nn.Linear(cfg.d_visual, cfg.n_embd)
        self.pos = nn.Parameter(0.02 * torch.randn(cfg.n_visual, cfg.n_embd))  # one per visual position
        if self.kind == "mlp":
            self.fc2 = nn.Linear(cfg.n_embd, cfg.n_embd)
        elif self.kind == "queries":
            self.queries = nn.Parameter(0.02 * torch.randn(cfg.n_queries, cfg.n_embd))
            self.ln_kv, self.ln_q, self.ln_2 = (nn.LayerNorm(cfg.n_embd) for _ in range(3))
            self.attn = CrossAttention(cfg)
            self.mlp = MLP(cfg)
        self.n_out = cfg.n_queries if self.kind == "queries" else cfg.n_visual

    def forward(self, visual: Tensor) -> Tensor:
        """(B, N, d_visual) -> (B, P, n_embd)."""
        if visual.dim() != 3 or visual.shape[1:] != (self.n_visual, self.fc.in_features):
            raise ValueError(f"visual must be (B, {self.n_visual}, {self.fc.in_features}), got {tuple(visual.shape)}")
        x = self.fc(visual) + self.pos  # (B, N, C)
        if self.kind == "linear":
            return x
        if self.kind == "mlp":
            return self.fc2(F.gelu(x))
        q = self.queries.expand(visual.shape[0], -1, -1)  # (B, nq, C)
        q = q + self.attn(self.ln_q(q), self.attn.memory(self.ln_kv(x)))[0]
        return q + self.mlp(self.ln_2(q))  # (B, nq, C)


def _is_language_model_key(name: str) -> bool:
    """True for decoder weights a text-only pre-training transfers (not the projector, not cross-attention)."""
    return not name.startswith("projector.") and ".cross." not in name


class MiniVLM(nn.Module):
    """Projector + causal Transformer decoder (nanoGPT-style, tied embeddings) with prefix or cross fusion."""

    def __init__(self, cfg: VLMConfig):
        super().__init__()
        self.cfg = cfg
        self.projector = Projector(cfg)
        self.tok_emb = nn.Embedding(cfg.vocab_size, cfg.n_embd)
        self.pos_emb = nn.Embedding(cfg.block_size, cfg.n_embd)  # text positions only
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layer))
        self.ln_f = nn.LayerNorm(cfg.n_embd)
        self.lm_head = nn.Linear(cfg.n_embd, cfg.vocab_size, bias=False)
        self.tok_emb.weight = self.lm_head.weight  # weight tying
        self.apply(self._init_weights)
        for name, p in self.named_parameters():  # GPT-2: scale the residual projections by 1/sqrt(2 * n_layer)
            if name.endswith("c_proj.weight"):
                nn.init.normal_(p, mean=0.0, std=0.02 / math.sqrt(2 * cfg.n_layer))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        """nanoGPT init: Linear and Embedding weights N(0, 0.02), biases 0."""
        if isinstance(module, nn.Linear):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
        elif isinstance(module, nn.Embedding):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    # ------------------------------------------------------------------ forward

    def encode_visual(self, visual: Tensor) -> Tensor:
        """Visual tokens (B, N, d_visual) -> projected tokens (B, P, n_embd), reusable across decoding steps."""
        return self.projector(visual)

    def forward(
        self,
        idx: Tensor,
        visual: Tensor | None = None,
        targets: Tensor | None = None,
        *,
        visual_tokens: Tensor | None = None,
        prefix_bias: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """Text logits (B, T, vocab) and mean cross-entropy over targets != -100 (or None).

        idx (B, T) token ids; visual (B, N, d_visual) raw visual tokens, or ``visual_tokens`` (B, P, n_embd)
        already projected by :meth:`encode_visual`; neither = a plain language model. targets (B, T) are
        already shifted: ``targets[:, t]`` is the token after ``idx[:, t]``. ``prefix_bias`` (B, nh, P, P): added to
        the visual prefix's attention scores among itself (prefix fusion; see :func:`with_prefix_bias`).
        """
        logits, _ = self._decode(idx, self._visual_tokens(visual, visual_tokens), prefix_bias=prefix_bias)
        loss = None
        if targets is not None:
            loss = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), ignore_index=-100)
        return logits, loss

    def _visual_tokens(self, visual: Tensor | None, visual_tokens: Tensor | None) -> Tensor | None:
        """Projected visual tokens from whichever of the two was given (not both)."""
        if visual is not None and visual_tokens is not None:
            raise ValueError("pass visual or visual_tokens, not both")
        return self.encode_visual(visual) if visual is not None else visual_tokens

    def _decode(
        self, idx: Tensor, vis: Tensor | None, need_weights: bool = False, prefix_bias: Tensor | None = None
    ) -> tuple[Tensor, list[tuple[Tensor | None, Tensor | None]]]:
        """Full (uncached) pass: idx (B, T), vis (B, P, C) or None -> (logits (B, T, vocab), per-layer weights)."""
        B, T = idx.shape
        if T > self.cfg.block_size:
            raise ValueError(f"{T} text tokens exceed block_size {self.cfg.block_size}")
        x = self.tok_emb(idx) + self.pos_emb(torch.arange(T, device=idx.device))  # (B, T, C)
        n_prefix = 0
        if vis is not None and self.cfg.fusion == "prefix":
            n_prefix = vis.shape[1]
            x = torch.cat([vis, x], dim=1)  # (B, P + T, C)
        x = self.drop(x)
        if prefix_bias is not None and n_prefix == 0:
            raise ValueError("prefix_bias needs visual tokens and prefix fusion")
        mask = with_prefix_bias(attention_mask(n_prefix, T, self.cfg.fusion, device=idx.device), prefix_bias)
        weights = []
        for block in self.blocks:
            memory = block.cross.memory(vis) if block.cross is not None and vis is not None else None
            x, _, w = block(x, mask, memory=memory, need_weights=need_weights)
            weights.append(w)
        return self.lm_head(self.ln_f(x[:, n_prefix:])), weights  # (B, T, vocab)

    # ------------------------------------------------------------------ incremental decoding

    def new_cache(
        self, visual_tokens: Tensor | None = None, prefix_bias: Tensor | None = None, keep_states: bool = False
    ) -> KVCache:
        """An empty cache; with visual tokens (B, P, C) the prefix (or each layer's cross keys/values) goes in once,
        its attention among itself biased by ``prefix_bias`` (B, nh, P, P) when given. ``keep_states``: the prefix's
        output of every block goes into ``cache.states`` (prefix fusion)."""
        cache = KVCache(k=[None] * self.cfg.n_layer, v=[None] * self.cfg.n_layer)
        if prefix_bias is not None and (visual_tokens is None or self.cfg.fusion != "prefix"):
            raise ValueError("prefix_bias needs visual tokens and prefix fusion")
        if visual_tokens is None:
            return cache
        if self.cfg.fusion == "cross":
            cache.memory = [block.cross.memory(visual_tokens) for block in self.blocks]
            return cache
        P = visual_tokens.shape[1]
        x, mask = self.drop(visual_tokens), attention_mask(P, 0, "prefix", device=visual_tokens.device)  # (P, P)
        mask = with_prefix_bias(mask, prefix_bias)
        cache.states = [] if keep_states else None
        for i, block in enumerate(self.blocks):
            x, (cache.k[i], cache.v[i]), _ = block(x, mask)
            if cache.states is not None:
                cache.states.append(x)
        cache.n_prefix = P
        return cache

    def forward_step(self, idx: Tensor, cache: KVCache, last: int | None = None) -> Tensor:
        """Logits (B, T_new, vocab) for new tokens idx (B, T_new) that follow what the cache holds; updates it.

        ``last``: logits of the last ``last`` positions only, (B, last, vocab). The final block then computes
        queries, attention and MLP for those positions alone (its keys and values for all), which is what
        training on one answer token needs: about a third less work for a 2-layer decoder.
        """
        T_new, start = idx.shape[1], cache.n_text
        if start + T_new > self.cfg.block_size:
            raise ValueError(f"{start + T_new} text tokens exceed block_size {self.cfg.block_size}")
        x = self.drop(self.tok_emb(idx) + self.pos_emb(torch.arange(start, start + T_new, device=idx.device)))
        mask = attention_mask(cache.n_prefix, start + T_new, self.cfg.fusion, device=idx.device)[-T_new:]
        for i, block in enumerate(self.blocks):
            past = None if cache.k[i] is None else (cache.k[i], cache.v[i])
            memory = None if cache.memory is None else cache.memory[i]
            n_query = last if i == len(self.blocks) - 1 else None
            x, (cache.k[i], cache.v[i]), _ = block(x, mask, past=past, memory=memory, n_query=n_query)
        cache.n_text += T_new
        return self.lm_head(self.ln_f(x))

    # ------------------------------------------------------------------ inspection

    @torch.no_grad()
    def attention_maps(
        self, idx: Tensor, visual: Tensor | None = None, *, visual_tokens: Tensor | None = None
    ) -> Tensor:
        """Attention of each text position to the visual tokens, (n_layer, B, n_head, T, P), in eval mode.

        Cross fusion: the cross-attention weights (each row sums to 1 over P). Prefix fusion: the
        self-attention weights from text rows to the prefix columns (rows sum to <= 1; the rest goes to text).
        """
        vis = self._visual_tokens(visual, visual_tokens)
        if vis is None:
            raise ValueError("attention_maps needs visual input")
        was_training = self.training
        self.eval()
        try:
            _, weights = self._decode(idx, vis, need_weights=True)
        finally:
            self.train(was_training)
        P = vis.shape[1]
        if self.cfg.fusion == "cross":
            return torch.stack([w_cross for _, w_cross in weights])
        return torch.stack([w_self[:, :, P:, :P] for w_self, _ in weights])

    def language_model_state(self) -> dict[str, Tensor]:
        """Copies of the decoder weights a text-only pre-training transfers (embeddings, self-attn, MLP, norms, head)."""
        return {k: v.detach().clone() for k, v in self.state_dict().items() if _is_language_model_key(k)}

    def load_language_model_(self, state: dict[str, Tensor]) -> MiniVLM:
        """Load :meth:`language_model_state` weights (exactly those keys); projector and cross-attention stay as they are."""
        expected = {k for k in self.state_dict() if _is_language_model_key(k)}
        missing, unexpected = sorted(expected - state.keys()), sorted(state.keys() - expected)
        if missing or unexpected:
            raise KeyError(f"language-model state does not match: missing {missing}, unexpected {unexpected}")
        self.load_state_dict(state, strict=False)
        return self

    def num_parameters(self, part: str = "all") -> int:
        """Parameter count of "all", "projector", "decoder" (the language model) or "cross_attention" (tied once)."""
        parts = {
            "all": lambda n: True,
            "projector": lambda n: n.startswith("projector."),
            "cross_attention": lambda n: ".cross." in n,
            "decoder": _is_language_model_key,
        }
        if part not in parts:
            raise ValueError(f"part must be one of {sorted(parts)}, got {part!r}")
        return sum(p.numel() for n, p in self.named_parameters() if parts[part](n))
