"""Transformer attention written from scratch: SDPA, multi-head, cross-modal, encoder/decoder blocks.

Everything here is plain tensor maths (no ``F.scaled_dot_product_attention``,
``nn.MultiheadAttention`` or ``nn.Transformer*`` inside), small enough to read in
one sitting, and checked in ``tests/test_attention.py`` against PyTorch's own
modules to 1e-5. Tensors are batch-first: ``(B, T, d)``.

Mask conventions (read these once, they differ from ``nn.MultiheadAttention``):

* ``mask`` (any function or module here): boolean **True = may attend**, like the
  boolean ``attn_mask`` of ``F.scaled_dot_product_attention``; or a float mask that
  is *added* to the scores (0 = keep, ``-inf`` = block). ``nn.MultiheadAttention``
  and ``nn.Transformer*`` use the opposite boolean meaning (True = blocked), so
  pass ``~mask`` to them.
* ``key_padding_mask`` / ``memory_key_padding_mask`` (B, Tk): same meaning as in
  ``nn.Transformer*`` so they can be passed unchanged: boolean **True = padding**
  (ignored), or a float mask added to the scores.
* ``context_mask`` (B, Tk) of :class:`CrossModalAttention`: boolean **True = real
  token**.
* A query row whose keys are all blocked gets all-zero attention weights and a
  zero attention output (before the output projection), not NaN.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    "scaled_dot_product_attention",
    "causal_mask",
    "sinusoidal_positional_encoding",
    "MultiHeadAttention",
    "CrossModalAttention",
    "FeedForward",
    "EncoderBlock",
    "DecoderBlock",
]


# --------------------------------------------------------------------------- functions


def causal_mask(t_q: int, t_k: int | None = None, device: torch.device | str | None = None) -> Tensor:
    """Boolean (t_q, t_k) mask, True where query i may attend to key j (j <= i + t_k - t_q).

    The triangle is aligned at the end (bottom-right): the last query sees every key,
    which is what a query block appended to a key cache needs. For ``t_q == t_k`` this
    is ``torch.ones(t, t).tril().bool()``, the mask behind ``is_causal=True`` in PyTorch.
    (For ``t_q != t_k`` PyTorch's ``is_causal`` aligns top-left instead.) When
    ``t_q > t_k`` the first ``t_q - t_k`` rows are all False.
    """
    t_k = t_q if t_k is None else t_k
    return torch.ones(t_q, t_k, dtype=torch.bool, device=device).tril(diagonal=t_k - t_q)


def scaled_dot_product_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    mask: Tensor | None = None,
    is_causal: bool = False,
    dropout_p: float = 0.0,
) -> tuple[Tensor, Tensor]:
    """softmax(q k^T / sqrt(d) + mask) v; returns (output (..., Tq, dv), weights (..., Tq, Tk)).

    q: (..., Tq, d), k: (..., Tk, d), v: (..., Tk, dv). ``mask`` is boolean (True = may
    attend) or float (added to the scores), broadcastable to (..., Tq, Tk).
    ``is_causal`` applies :func:`causal_mask` (end-aligned) and may be combined with
    ``mask``. Fully masked rows give zero weights and a zero output instead of NaN.
    ``dropout_p`` is applied to the weights used for the output whenever it is > 0
    (pass 0.0 at eval time); the returned weights are the ones before dropout.
    """
    t_q, t_k = q.size(-2), k.size(-2)
    scores = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(q.size(-1)))  # (..., Tq, Tk)
    neg_inf = torch.tensor(float("-inf"), dtype=scores.dtype, device=scores.device)
    if mask is not None:
        scores = torch.where(mask, scores, neg_inf) if mask.dtype == torch.bool else scores + mask
    if is_causal:
        scores = torch.where(causal_mask(t_q, t_k, device=scores.device), scores, neg_inf)
    # a row with nothing to attend to would be softmax(-inf, ..., -inf) = NaN: zero it instead
    dead = torch.isneginf(scores).all(dim=-1, keepdim=True)  # (..., Tq, 1)
    scores = scores.masked_fill(dead, 0.0)
    weights = torch.softmax(scores, dim=-1).masked_fill(dead, 0.0)  # (..., Tq, Tk)
    attn = F.dropout(weights, p=dropout_p) if dropout_p > 0.0 else weights
    return attn @ v, weights  # (..., Tq, dv), (..., Tq, Tk)


def sinusoidal_positional_encoding(
    n_positions: int,
    d_model: int,
    base: float = 10000.0,
    *,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> Tensor:
    """(n_positions, d_model) table with PE[p, 2i] = sin(p / base^(2i/d)), PE[p, 2i+1] = cos(...).

    Computed in float64 and cast to ``dtype`` (default: torch's default dtype).
    Raises ValueError for an odd ``d_model`` (sin/cos come in pairs).
    """
    if d_model % 2 != 0:
        raise ValueError(f"d_model must be even for sin/cos pairs, got {d_model}")
    pos = torch.arange(n_positions, dtype=torch.float64, device=device)[:, None]  # (P, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float64, device=device)  # (d/2,)
    angle = pos / base ** (two_i / d_model)  # (P, d/2)
    pe = torch.stack([angle.sin(), angle.cos()], dim=-1).flatten(-2)  # (P, d) interleaved sin, cos
    return pe.to(dtype or torch.get_default_dtype())


# --------------------------------------------------------------------------- helpers


def _as_additive(mask: Tensor, dtype: torch.dtype) -> Tensor:
    """Bool keep-mask -> float mask of 0 / -inf; float masks pass through."""
    if mask.dtype != torch.bool:
        return mask.to(dtype)
    return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(~mask, float("-inf"))


def _merge_masks(a: Tensor | None, b: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """Combine two masks in this module's convention (bool True = keep, or additive float)."""
    if a is None or b is None:
        return a if b is None else b
    if a.dtype == torch.bool and b.dtype == torch.bool:
        return a & b
    return _as_additive(a, dtype) + _as_additive(b, dtype)


def _padding_to_keep(key_padding_mask: Tensor) -> Tensor:
    """(B, Tk) PyTorch-style padding mask (bool True = pad, or float) -> (B, 1, 1, Tk) mask here."""
    m = key_padding_mask[:, None, None, :]  # (B, 1, 1, Tk)
    return ~m if m.dtype == torch.bool else m


@torch.no_grad()
def _copy_param(dst: Tensor | None, src: Tensor | None, name: str) -> None:
    """Copy src into dst; a missing src bias is copied as zeros."""
    if dst is None:
        if src is not None and bool(src.ne(0).any()):
            raise ValueError(f"{name}: source has a bias but this module was built with bias=False")
        return
    if src is None:
        dst.zero_()
        return
    if dst.shape != src.shape:
        raise ValueError(f"{name}: shape {tuple(src.shape)} does not fit {tuple(dst.shape)}")
    dst.copy_(src)


def _copy_linear(dst: nn.Linear, src: nn.Linear, name: str) -> None:
    """Copy weight and bias of one Linear into another."""
    _copy_param(dst.weight, src.weight, f"{name}.weight")
    _copy_param(dst.bias, src.bias, f"{name}.bias")


def _copy_norm(dst: nn.LayerNorm, src: nn.LayerNorm, name: str) -> None:
    """Copy a LayerNorm's affine parameters; its eps must match."""
    if dst.eps != src.eps:
        raise ValueError(f"{name}: layer_norm_eps {src.eps} != {dst.eps}")
    _copy_param(dst.weight, src.weight, f"{name}.weight")
    _copy_param(dst.bias, src.bias, f"{name}.bias")


def _torch_activation_name(fn: object) -> str | None:
    """'relu' / 'gelu' for the activations nn.Transformer*Layer accepts, else None."""
    if fn is F.relu or isinstance(fn, nn.ReLU):
        return "relu"
    if fn is F.gelu or (isinstance(fn, nn.GELU) and fn.approximate == "none"):
        return "gelu"
    return None


def _check_layer(block: nn.Module, layer: nn.Module) -> None:
    """Raise ValueError if a torch layer's norm placement or activation differ from block's."""
    if bool(layer.norm_first) != block.norm_first:
        raise ValueError(f"norm_first differs: torch layer {layer.norm_first}, this block {block.norm_first}")
    act = _torch_activation_name(layer.activation)
    if act != block.ff.activation:
        raise ValueError(f"activation differs: torch layer {layer.activation!r}, this block {block.ff.activation!r}")


# --------------------------------------------------------------------------- modules


class MultiHeadAttention(nn.Module):
    """Multi-head attention: project q/k/v, split into heads, attend, merge heads, project out."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        dropout: float = 0.0,
        bias: bool = True,
        kdim: int | None = None,
        vdim: int | None = None,
        qdim: int | None = None,
        out_dim: int | None = None,
    ):
        super().__init__()
        if d_model % n_heads != 0:
            raise ValueError(f"d_model ({d_model}) must be divisible by n_heads ({n_heads})")
        self.d_model, self.n_heads, self.head_dim = d_model, n_heads, d_model // n_heads
        self.qdim, self.kdim, self.vdim = qdim or d_model, kdim or d_model, vdim or d_model
        self.out_dim = out_dim or d_model
        self.dropout = dropout
        self.q_proj = nn.Linear(self.qdim, d_model, bias=bias)
        self.k_proj = nn.Linear(self.kdim, d_model, bias=bias)
        self.v_proj = nn.Linear(self.vdim, d_model, bias=bias)
        self.out_proj = nn.Linear(d_model, self.out_dim, bias=bias)

    def forward(
        self,
        query: Tensor,
        key: Tensor | None = None,
        value: Tensor | None = None,
        mask: Tensor | None = None,
        is_causal: bool = False,
        need_weights: bool = True,
        average_weights: bool = True,
        key_padding_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor | None]:
        """(B, Tq, qdim) x (B, Tk, kdim) x (B, Tk, vdim) -> out (B, Tq, out_dim), weights.

        key defaults to query, value to key. ``mask``: bool True = may attend, or float
        additive; shape (Tq, Tk), (B, Tq, Tk) or (B, H, Tq, Tk). ``key_padding_mask``:
        (B, Tk), True = padding (as in nn.MultiheadAttention). Weights are (B, Tq, Tk)
        averaged over heads, (B, H, Tq, Tk) with ``average_weights=False``, or None
        with ``need_weights=False``.
        """
        key = query if key is None else key
        value = key if value is None else value
        B, Tq, _ = query.shape
        Tk = key.size(1)
        H, hs = self.n_heads, self.head_dim
        q = self.q_proj(query).view(B, Tq, H, hs).transpose(1, 2)  # (B, H, Tq, hs)
        k = self.k_proj(key).view(B, Tk, H, hs).transpose(1, 2)  # (B, H, Tk, hs)
        v = self.v_proj(value).view(B, Tk, H, hs).transpose(1, 2)  # (B, H, Tk, hs)
        if mask is not None and mask.dim() == 3:
            mask = mask.unsqueeze(1)  # (B, 1, Tq, Tk), same for every head
        if key_padding_mask is not None:
            mask = _merge_masks(mask, _padding_to_keep(key_padding_mask), q.dtype)
        p = self.dropout if self.training else 0.0
        y, w = scaled_dot_product_attention(q, k, v, mask=mask, is_causal=is_causal, dropout_p=p)
        y = y.transpose(1, 2).contiguous().view(B, Tq, self.d_model)  # (B, Tq, d_model) heads side by side
        out = self.out_proj(y)  # (B, Tq, out_dim)
        if not need_weights:
            return out, None
        return out, (w.mean(dim=1) if average_weights else w)  # (B, Tq, Tk) or (B, H, Tq, Tk)

    def load_torch_(self, mha: nn.MultiheadAttention) -> MultiHeadAttention:
        """Copy the weights of an nn.MultiheadAttention (packed or separate q/k/v) into self."""
        if mha.embed_dim != self.d_model or mha.num_heads != self.n_heads:
            raise ValueError(
                f"nn.MultiheadAttention({mha.embed_dim}, {mha.num_heads}) does not fit "
                f"MultiHeadAttention({self.d_model}, {self.n_heads})"
            )
        if (mha.kdim, mha.vdim) != (self.kdim, self.vdim) or self.qdim != self.d_model or self.out_dim != self.d_model:
            raise ValueError("query/key/value/output widths differ from the nn.MultiheadAttention")
        if mha.bias_k is not None or mha.add_zero_attn:
            raise ValueError("add_bias_kv / add_zero_attn are not supported")
        if mha._qkv_same_embed_dim:
            w_q, w_k, w_v = mha.in_proj_weight.chunk(3, dim=0)  # each (d_model, d_model)
        else:
            w_q, w_k, w_v = mha.q_proj_weight, mha.k_proj_weight, mha.v_proj_weight
        b_q = b_k = b_v = None
        if mha.in_proj_bias is not None:
            b_q, b_k, b_v = mha.in_proj_bias.chunk(3, dim=0)
        for proj, w, b, n in ((self.q_proj, w_q, b_q, "q"), (self.k_proj, w_k, b_k, "k"), (self.v_proj, w_v, b_v, "v")):
            _copy_param(proj.weight, w, f"{n}_proj.weight")
            _copy_param(proj.bias, b, f"{n}_proj.bias")
        _copy_linear(self.out_proj, mha.out_proj, "out_proj")
        return self


class CrossModalAttention(nn.Module):
    """Queries from one modality (d_query) attend to keys/values of another (d_context)."""

    def __init__(
        self,
        d_query: int,
        d_context: int,
        n_heads: int,
        d_model: int | None = None,
        dropout: float = 0.0,
    ):
        super().__init__()
        self.d_query, self.d_context = d_query, d_context
        self.d_model = d_model or d_query
        self.attn = MultiHeadAttention(
            self.d_model, n_heads, dropout=dropout, kdim=d_context, vdim=d_context, qdim=d_query, out_dim=d_query
        )

    def forward(self, x: Tensor, context: Tensor, context_mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """x (B, Tq, d_query), context (B, Tk, d_context) -> out (B, Tq, d_query), weights (B, Tq, Tk).

        ``context_mask`` (B, Tk) bool, True = real token; padded context tokens get zero weight.
        The output is in the query space and carries no residual: add ``x`` yourself.
        """
        mask = None if context_mask is None else context_mask[:, None, None, :].bool()  # (B, 1, 1, Tk)
        out, w = self.attn(x, context, context, mask=mask)
        return out, w

    def load_torch_(self, mha: nn.MultiheadAttention) -> CrossModalAttention:
        """Copy nn.MultiheadAttention(d_query, n_heads, kdim=d_context, vdim=d_context) weights (needs d_model == d_query)."""
        if self.d_model != self.d_query:
            raise ValueError(f"load_torch_ needs d_model == d_query, got {self.d_model} != {self.d_query}")
        self.attn.load_torch_(mha)
        return self


class FeedForward(nn.Module):
    """Position-wise MLP: Linear -> activation -> dropout -> Linear."""

    def __init__(self, d_model: int, d_ff: int, dropout: float = 0.0, activation: str = "relu", bias: bool = True):
        super().__init__()
        if activation not in ("relu", "gelu"):
            raise ValueError(f"activation must be 'relu' or 'gelu', got {activation!r}")
        self.activation = activation
        self.linear1 = nn.Linear(d_model, d_ff, bias=bias)
        self.act = nn.ReLU() if activation == "relu" else nn.GELU()
        self.dropout = nn.Dropout(dropout)
        self.linear2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """(B, T, d_model) -> (B, T, d_model)."""
        return self.linear2(self.dropout(self.act(self.linear1(x))))  # (B, T, d_ff) inside


class EncoderBlock(nn.Module):
    """Self-attention + feed-forward with residuals; post-norm (original) or pre-norm."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        layer_norm_eps: float = 1e-5,
    ):
        super().__init__()
        self.norm_first = norm_first
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm_attn = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.norm_ff = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.drop_attn = nn.Dropout(dropout)
        self.drop_ff = nn.Dropout(dropout)
        self.last_attn: Tensor | None = None

    def _sa(self, x: Tensor, mask: Tensor | None, key_padding_mask: Tensor | None, is_causal: bool) -> Tensor:
        """Self-attention sublayer output (before the residual add)."""
        y, w = self.self_attn(x, mask=mask, is_causal=is_causal, key_padding_mask=key_padding_mask)
        self.last_attn = w.detach()
        return self.drop_attn(y)

    def forward(
        self,
        x: Tensor,
        mask: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        is_causal: bool = False,
    ) -> Tensor:
        """x (B, T, d_model) -> (B, T, d_model). mask: True = may attend; key_padding_mask: True = pad."""
        if self.norm_first:
            x = x + self._sa(self.norm_attn(x), mask, key_padding_mask, is_causal)
            x = x + self.drop_ff(self.ff(self.norm_ff(x)))
        else:
            x = self.norm_attn(x + self._sa(x, mask, key_padding_mask, is_causal))
            x = self.norm_ff(x + self.drop_ff(self.ff(x)))
        return x

    def load_torch_(self, layer: nn.TransformerEncoderLayer) -> EncoderBlock:
        """Copy the weights of an nn.TransformerEncoderLayer with the same settings."""
        _check_layer(self, layer)
        self.self_attn.load_torch_(layer.self_attn)
        _copy_linear(self.ff.linear1, layer.linear1, "linear1")
        _copy_linear(self.ff.linear2, layer.linear2, "linear2")
        _copy_norm(self.norm_attn, layer.norm1, "norm1")
        _copy_norm(self.norm_ff, layer.norm2, "norm2")
        return self


class DecoderBlock(nn.Module):
    """Causal self-attention, optional cross-attention to ``memory``, feed-forward; GPT block without cross."""

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        d_ff: int,
        dropout: float = 0.0,
        activation: str = "relu",
        norm_first: bool = False,
        cross_attention: bool = True,
        layer_norm_eps: float = 1e-5,
        d_memory: int | None = None,
    ):
        super().__init__()
        self.norm_first, self.cross_attention = norm_first, cross_attention
        self.self_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout)
        self.norm_self = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.drop_self = nn.Dropout(dropout)
        if cross_attention:
            # d_memory lets memory (e.g. visual tokens) keep its own width; nn.TransformerDecoderLayer needs d_model
            self.cross_attn = MultiHeadAttention(d_model, n_heads, dropout=dropout, kdim=d_memory, vdim=d_memory)
            self.norm_cross = nn.LayerNorm(d_model, eps=layer_norm_eps)
            self.drop_cross = nn.Dropout(dropout)
        self.ff = FeedForward(d_model, d_ff, dropout=dropout, activation=activation)
        self.norm_ff = nn.LayerNorm(d_model, eps=layer_norm_eps)
        self.drop_ff = nn.Dropout(dropout)
        self.last_self_attn: Tensor | None = None  # (B, T, T), head-averaged, detached
        self.last_cross_attn: Tensor | None = None  # (B, T, Tm), head-averaged, detached

    def _sa(self, x: Tensor) -> Tensor:
        """Causal self-attention sublayer output."""
        y, w = self.self_attn(x, is_causal=True)
        self.last_self_attn = w.detach()
        return self.drop_self(y)

    def _ca(self, x: Tensor, memory: Tensor, memory_key_padding_mask: Tensor | None) -> Tensor:
        """Cross-attention sublayer output: queries from x, keys/values from memory."""
        y, w = self.cross_attn(x, memory, memory, key_padding_mask=memory_key_padding_mask)
        self.last_cross_attn = w.detach()
        return self.drop_cross(y)

    def forward(
        self,
        x: Tensor,
        memory: Tensor | None = None,
        memory_key_padding_mask: Tensor | None = None,
    ) -> Tensor:
        """x (B, T, d_model), memory (B, Tm, d_memory) -> (B, T, d_model). memory_key_padding_mask: True = pad."""
        if self.cross_attention and memory is None:
            raise ValueError("this DecoderBlock has cross-attention: pass memory")
        if not self.cross_attention and memory is not None:
            raise ValueError("this DecoderBlock was built with cross_attention=False: memory would be ignored")
        if self.norm_first:
            x = x + self._sa(self.norm_self(x))
            if self.cross_attention:
                x = x + self._ca(self.norm_cross(x), memory, memory_key_padding_mask)
            x = x + self.drop_ff(self.ff(self.norm_ff(x)))
        else:
            x = self.norm_self(x + self._sa(x))
            if self.cross_attention:
                x = self.norm_cross(x + self._ca(x, memory, memory_key_padding_mask))
            x = self.norm_ff(x + self.drop_ff(self.ff(x)))
        return x

    def load_torch_(self, layer: nn.TransformerDecoderLayer | nn.TransformerEncoderLayer) -> DecoderBlock:
        """Copy an nn.TransformerDecoderLayer (cross_attention=True) or nn.TransformerEncoderLayer (False)."""
        _check_layer(self, layer)
        self.self_attn.load_torch_(layer.self_attn)
        _copy_norm(self.norm_self, layer.norm1, "norm1")
        if self.cross_attention:
            if not hasattr(layer, "multihead_attn"):
                raise ValueError("cross_attention=True needs an nn.TransformerDecoderLayer")
            self.cross_attn.load_torch_(layer.multihead_attn)
            _copy_norm(self.norm_cross, layer.norm2, "norm2")
            _copy_norm(self.norm_ff, layer.norm3, "norm3")
        else:
            if hasattr(layer, "multihead_attn"):
                raise ValueError("cross_attention=False loads an nn.TransformerEncoderLayer, not a decoder layer")
            _copy_norm(self.norm_ff, layer.norm2, "norm2")
        _copy_linear(self.ff.linear1, layer.linear1, "linear1")
        _copy_linear(self.ff.linear2, layer.linear2, "linear2")
        return self
