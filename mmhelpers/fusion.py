"""The fusion zoo: combine per-modality features (early, weighted, gated, tensor, low-rank, late, attention).

Every fusion module takes ``inputs: dict[str, Tensor]`` keyed by modality name, checks it with
:func:`check_inputs`, processes the modalities in **sorted key order** (so the dict's insertion
order never matters) and exposes ``out_dim``. Input shapes:

* pooled-vector fusions (``ConcatFusion``, ``WeightedSumFusion``, ``GatedFusion``, ``TensorFusion``,
  ``LowRankTensorFusion``): ``(B, d_m)`` per modality; use :func:`pool_tokens` for token encoders.
* late fusion (``LateFusion``): per-modality logits ``(B, C)``; it returns fused logits (log-probabilities).
* token fusions (``CrossModalAttentionFusion``, ``TransformerFusion``): ``(B, T_m, d_m)``; a ``(B, d_m)``
  vector is taken as one token. Padding masks are not supported: every token counts.

Inputs must be floating-point tensors; any float dtype is cast to that of the module's parameters
(float64 features from NumPy just work), and integer or bool inputs are a TypeError naming the modality.

:class:`MultimodalClassifier` puts encoders, a fusion module and a head together, and
:func:`build_fusion` builds any method of :data:`FUSION_METHODS` by name.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch import Tensor

from mmhelpers.attention import CrossModalAttention, EncoderBlock, sinusoidal_positional_encoding
from mmhelpers.errors import ModalityError

__all__ = [
    "FUSION_METHODS",
    "ConcatFusion",
    "CrossModalAttentionFusion",
    "GatedFusion",
    "LateFusion",
    "LowRankTensorFusion",
    "MultimodalClassifier",
    "TensorFusion",
    "TransformerFusion",
    "WeightedSumFusion",
    "build_fusion",
    "check_inputs",
    "drop_random_modality",
    "pool_tokens",
    "real_tokens",
    "tensor_fusion",
]

FUSION_METHODS: dict[str, str] = {
    "concat": "early fusion: concatenate the modality vectors (optionally project)",
    "weighted": "project each modality, then sum with learned softmax-normalised weights",
    "gated": "Gated Multimodal Unit: learned per-feature gates choose how much of each modality to use",
    "tensor": "Tensor Fusion Network: outer product of the [1, x_m] vectors, then a Linear layer",
    "low_rank": "Low-rank Multimodal Fusion: the tensor-fusion Linear factorised into rank-r per-modality factors",
    "late_mean": "late fusion: average the modalities' softmax probabilities",
    "late_vote": "late fusion: majority vote of the modalities' predictions (no gradient)",
    "late_learned": "late fusion: learned softmax weights on the modalities' log-probabilities",
    "cross_attention": "each modality's tokens attend to the other's (both ways), pooled and concatenated",
    "transformer": "one Transformer encoder over all tokens plus a [CLS] token (position + modality embeddings)",
}


# --------------------------------------------------------------------------- helpers


def check_inputs(
    inputs: Mapping[str, Tensor],
    expected: Sequence[str],
    *,
    dims: Mapping[str, int] | None = None,
    ndim: int | Sequence[int] | None = None,
) -> int:
    """Check modality names (none missing, none extra), batch sizes, and optionally rank and last dim; return B.

    Raises ModalityError naming the modality and the sizes involved.
    """
    want = sorted(expected)
    if not want:
        raise ValueError("expected at least one modality")
    for m in want:
        if m not in inputs:
            raise ModalityError(f"missing modality {m!r}: expected {want}, got {sorted(inputs)}")
    for m in sorted(inputs):
        if m not in want:
            raise ModalityError(f"unexpected modality {m!r}: expected {want}, got {sorted(inputs)}")
    ranks = (ndim,) if isinstance(ndim, int) else ndim
    first, batch = want[0], -1
    for m in want:
        x = inputs[m]
        if not isinstance(x, Tensor):
            raise TypeError(f"modality {m!r} is a {type(x).__name__}, expected a torch.Tensor (see torch.as_tensor)")
        if x.dim() == 0 or (ranks is not None and x.dim() not in ranks):
            want_rank = "at least 1" if ranks is None else " or ".join(map(str, ranks))
            raise ModalityError(f"modality {m!r} has shape {tuple(x.shape)}, expected {want_rank} dims")
        if dims is not None and x.shape[-1] != dims[m]:
            raise ModalityError(f"modality {m!r} has feature size {x.shape[-1]}, expected {dims[m]}")
        if batch < 0:
            first, batch = m, x.shape[0]
        elif x.shape[0] != batch:
            raise ModalityError(
                f"batch size mismatch: modality {m!r} has batch size {x.shape[0]} but {first!r} has {batch}"
            )
    return batch


def _sorted_dims(dims: Mapping[str, int], min_modalities: int = 1) -> dict[str, int]:
    """Validate ``dims`` (modality -> positive int) and return it with sorted keys."""
    if len(dims) < min_modalities:
        raise ValueError(f"need at least {min_modalities} modalities, got {sorted(dims)}")
    for m, d in dims.items():
        if int(d) != d or d < 1:
            raise ValueError(f"modality {m!r}: dimension must be a positive int, got {d!r}")
    return {m: int(dims[m]) for m in sorted(dims)}


def _cast_inputs(module: nn.Module, inputs: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """Inputs cast to the dtype of the module's parameters (kept as they are if it has none); TypeError unless floating."""
    for m in sorted(inputs):
        if not inputs[m].is_floating_point():
            raise TypeError(
                f"modality {m!r} has dtype {inputs[m].dtype}, expected a floating-point tensor (features or logits; "
                "convert with .float(), and encode labels or token ids first)"
            )
    dtype = next((p.dtype for p in module.parameters()), None)
    return {m: x if dtype is None else x.to(dtype) for m, x in inputs.items()}


def _with_one(x: Tensor) -> Tensor:
    """(B, d) -> (B, d + 1) = [1, x]: the constant lets products keep every lower-order term."""
    return torch.cat([x.new_ones(x.shape[0], 1), x], dim=-1)


def _as_tokens(x: Tensor) -> Tensor:
    """(B, d) -> (B, 1, d); (B, T, d) unchanged."""
    return x.unsqueeze(1) if x.dim() == 2 else x


def real_tokens(x: Tensor) -> Tensor:
    """(B, T, d) -> (B, T) bool, True where a token is not all zeros: the padding convention of ``mask_zero_tokens``
    (as Keras' ``Masking(mask_value=0.0)``). Pad variable-length sequences with exact zeros to use it."""
    return x.ne(0).any(dim=-1)


def pool_tokens(x: Tensor, mask: Tensor | None = None) -> Tensor:
    """Mean over tokens: (B, T, d) -> (B, d); ``mask`` (B, T) bool, True = real token, averages only those."""
    if mask is None:
        return x.mean(dim=1)
    w = mask.to(x.dtype).unsqueeze(-1)  # (B, T, 1)
    return (x * w).sum(dim=1) / w.sum(dim=1).clamp(min=1.0)


def tensor_fusion(vectors: Sequence[Tensor]) -> Tensor:
    """Outer product of [1, x_1] x ... x [1, x_M] per sample, flattened row-major: (B, prod(d_m + 1)).

    Index 0 of every factor is the constant 1, so the result holds 1, every unimodal feature and
    every cross-modal product. Entry (i_1, ..., i_M) sits at the row-major flat index (last modality
    fastest). Example: a = [2], b = [3] -> [1, 3, 2, 6] = [1*1, 1*b, a*1, a*b].
    """
    if not vectors:
        raise ValueError("tensor_fusion needs at least one vector")
    out = _with_one(vectors[0])  # (B, d_1 + 1)
    for x in vectors[1:]:
        z = _with_one(x)  # (B, d_m + 1)
        out = (out[:, :, None] * z[:, None, :]).flatten(1)  # (B, prod so far * (d_m + 1))
    return out


# --------------------------------------------------------------------------- pooled-vector fusions


class ConcatFusion(nn.Module):
    """Early (feature-level) fusion: concatenate in sorted modality order, then an optional Linear to out_dim."""

    def __init__(self, dims: Mapping[str, int], out_dim: int | None = None):
        super().__init__()
        self.dims = _sorted_dims(dims)
        self.modalities = list(self.dims)
        d_cat = sum(self.dims.values())
        self.proj = nn.Identity() if out_dim is None else nn.Linear(d_cat, out_dim)
        self.out_dim = d_cat if out_dim is None else out_dim

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, d_m)} -> (B, out_dim)."""
        check_inputs(inputs, self.modalities, dims=self.dims, ndim=2)
        inputs = _cast_inputs(self, inputs)
        x = torch.cat([inputs[m] for m in self.modalities], dim=-1)  # (B, sum d_m)
        return self.proj(x)


class WeightedSumFusion(nn.Module):
    """Project each modality to out_dim, then sum with one learned softmax-normalised weight per modality."""

    def __init__(self, dims: Mapping[str, int], out_dim: int):
        super().__init__()
        self.dims = _sorted_dims(dims)
        self.modalities = list(self.dims)
        self.out_dim = out_dim
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        self.logits = nn.Parameter(torch.zeros(len(self.dims)))  # equal weights at the start

    def weights(self) -> Tensor:
        """(M,) normalised weights, in sorted modality order; they sum to 1."""
        return torch.softmax(self.logits, dim=0)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, d_m)} -> (B, out_dim) = sum_m w_m * W_m x_m."""
        check_inputs(inputs, self.modalities, dims=self.dims, ndim=2)
        inputs = _cast_inputs(self, inputs)
        h = torch.stack([self.proj[m](inputs[m]) for m in self.modalities], dim=1)  # (B, M, out_dim)
        return (self.weights()[None, :, None] * h).sum(dim=1)


class GatedFusion(nn.Module):
    """Gated Multimodal Unit (Arevalo et al. 2017): output = sum_m z_m * tanh(W_m x_m), gates z from all inputs.

    Two modalities: z = sigmoid(W_z [x_1; x_2]) and the gates are (z, 1 - z). More: a softmax over
    modalities per output feature. ``last_gates`` (B, M, out_dim), detached, in sorted modality order.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int):
        super().__init__()
        self.dims = _sorted_dims(dims, min_modalities=2)
        self.modalities = list(self.dims)
        self.out_dim = out_dim
        n = len(self.dims)
        self.proj = nn.ModuleDict({m: nn.Linear(d, out_dim) for m, d in self.dims.items()})
        self.gate = nn.Linear(sum(self.dims.values()), out_dim if n == 2 else n * out_dim)
        self.last_gates: Tensor | None = None

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, d_m)} -> (B, out_dim)."""
        B = check_inputs(inputs, self.modalities, dims=self.dims, ndim=2)
        inputs = _cast_inputs(self, inputs)
        h = torch.stack([torch.tanh(self.proj[m](inputs[m])) for m in self.modalities], dim=1)  # (B, M, out_dim)
        g = self.gate(torch.cat([inputs[m] for m in self.modalities], dim=-1))  # (B, out_dim) or (B, M * out_dim)
        if len(self.modalities) == 2:
            z = torch.sigmoid(g)
            gates = torch.stack([z, 1.0 - z], dim=1)  # (B, 2, out_dim)
        else:
            gates = torch.softmax(g.view(B, len(self.modalities), self.out_dim), dim=1)  # (B, M, out_dim)
        self.last_gates = gates.detach()
        return (gates * h).sum(dim=1)


class TensorFusion(nn.Module):
    """Tensor Fusion Network (Zadeh et al. 2017): Linear over the flattened outer product of [1, x_m] (see tensor_fusion)."""

    def __init__(self, dims: Mapping[str, int], out_dim: int):
        super().__init__()
        self.dims = _sorted_dims(dims)
        self.modalities = list(self.dims)
        self.out_dim = out_dim
        self.fused_dim = math.prod(d + 1 for d in self.dims.values())
        self.linear = nn.Linear(self.fused_dim, out_dim)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, d_m)} -> (B, out_dim)."""
        check_inputs(inputs, self.modalities, dims=self.dims, ndim=2)
        inputs = _cast_inputs(self, inputs)
        z = tensor_fusion([inputs[m] for m in self.modalities])  # (B, prod(d_m + 1))
        return self.linear(z)


class LowRankTensorFusion(nn.Module):
    """Low-rank Multimodal Fusion (Liu et al. 2018): fused = sum_r prod_m ([1, x_m] @ W_m[r]) + bias.

    ``factors[m]`` has shape (rank, d_m + 1, out_dim); index 0 of the middle axis multiplies the
    constant 1, as in :func:`tensor_fusion`. This is TensorFusion whose weight is the rank-r tensor
    W[o, i_1, ..., i_M] = sum_r prod_m factors[m][r, i_m, o], at sum_m (d_m + 1) * rank * out_dim parameters.
    """

    def __init__(self, dims: Mapping[str, int], out_dim: int, rank: int = 4):
        super().__init__()
        if rank < 1:
            raise ValueError(f"rank must be >= 1, got {rank}")
        self.dims = _sorted_dims(dims)
        self.modalities = list(self.dims)
        self.out_dim, self.rank = out_dim, rank
        self.factors = nn.ParameterDict()
        for i, (m, d) in enumerate(self.dims.items()):
            # unit-variance inputs give unit-variance factor outputs; 1/sqrt(rank) once keeps the rank sum at ~1
            std = (d + 1) ** -0.5 * (rank**-0.5 if i == 0 else 1.0)
            self.factors[m] = nn.Parameter(torch.randn(rank, d + 1, out_dim) * std)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, d_m)} -> (B, out_dim)."""
        check_inputs(inputs, self.modalities, dims=self.dims, ndim=2)
        inputs = _cast_inputs(self, inputs)
        fused: Tensor | None = None
        for m in self.modalities:
            y = torch.einsum("bi,rio->bro", _with_one(inputs[m]), self.factors[m])  # (B, rank, out_dim)
            fused = y if fused is None else fused * y
        return fused.sum(dim=1) + self.bias  # (B, out_dim)


# --------------------------------------------------------------------------- late fusion


class LateFusion(nn.Module):
    """Combine per-modality logits (B, C) into fused logits (B, C), which are log-probabilities.

    * ``"mean"``: log of the average of the modalities' softmax probabilities.
    * ``"vote"``: majority vote of the per-modality argmaxes; returns log(vote share + eps * (1 + mean
      probability)), so argmax gives the most voted class and ties go to the larger summed probability.
      An argmax has no gradient: the output is detached (combine trained models with it, don't train through it).
    * ``"learned"``: log_softmax(sum_m w_m * log_softmax(logits_m)) with w = softmax of a learned
      parameter per modality (a weighted product of experts, renormalised).

    ``out_dim`` is ``n_classes``; left None, any C is accepted (the same for every modality).
    """

    MODES = ("mean", "vote", "learned")

    def __init__(self, modalities: Sequence[str], mode: str = "mean", n_classes: int | None = None, eps: float = 1e-6):
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"mode must be one of {self.MODES}, got {mode!r}")
        if not modalities or len(set(modalities)) != len(modalities):
            raise ValueError(f"need distinct modality names, got {list(modalities)}")
        self.modalities = sorted(modalities)
        self.mode, self.eps = mode, eps
        self.out_dim: int | None = n_classes
        self.logits = nn.Parameter(torch.zeros(len(self.modalities))) if mode == "learned" else None

    def weights(self) -> Tensor:
        """(M,) per-modality weights in sorted order: learned (softmax) for "learned", else uniform."""
        if self.logits is None:
            return torch.full((len(self.modalities),), 1.0 / len(self.modalities))
        return torch.softmax(self.logits, dim=0)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: logits (B, C)} -> fused log-probabilities (B, C)."""
        check_inputs(inputs, self.modalities, ndim=2)
        inputs = _cast_inputs(self, inputs)
        sizes = {m: inputs[m].shape[1] for m in self.modalities}
        n_classes = self.out_dim or sizes[self.modalities[0]]
        for m, c in sizes.items():
            if c != n_classes:
                raise ModalityError(f"modality {m!r} has {c} classes, expected {n_classes} (sizes: {sizes})")
        logits = torch.stack([inputs[m] for m in self.modalities], dim=1)  # (B, M, C)
        logp = F.log_softmax(logits, dim=-1)  # (B, M, C)
        n = len(self.modalities)
        if self.mode == "mean":
            return torch.logsumexp(logp, dim=1) - math.log(n)  # log(mean_m p_m), computed stably
        if self.mode == "learned":
            return F.log_softmax((self.weights()[None, :, None] * logp).sum(dim=1), dim=-1)
        with torch.no_grad():  # vote
            probs = logp.exp()
            votes = F.one_hot(probs.argmax(dim=-1), n_classes).sum(dim=1).to(probs.dtype)  # (B, C) vote counts
            return torch.log(votes / n + self.eps * (1.0 + probs.mean(dim=1)))


# --------------------------------------------------------------------------- token fusions


class CrossModalAttentionFusion(nn.Module):
    """Two modalities, each attending to the other (residual + LayerNorm), mean-pooled and concatenated.

    ``last_attention["a->b"]`` (B, T_a, T_b): head-averaged weights of a's tokens (queries) over b's.
    ``mask_zero_tokens``: tokens that are all zeros are padding (variable-length sequences padded with zeros):
    no token attends to them and pooling skips them; a sample whose context is all padding (a dropped modality)
    gets no attention output.
    """

    def __init__(self, dims: Mapping[str, int], d_model: int, n_heads: int = 4, dropout: float = 0.0,
                 mask_zero_tokens: bool = False):  # fmt: skip
        super().__init__()
        self.mask_zero_tokens = mask_zero_tokens
        self.dims = _sorted_dims(dims, min_modalities=2)
        if len(self.dims) != 2:
            raise ValueError(f"CrossModalAttentionFusion takes exactly two modalities, got {sorted(dims)}")
        self.modalities = list(self.dims)
        self.d_model, self.out_dim = d_model, 2 * d_model
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        # attn[m]: modality m's tokens query the other modality's tokens
        self.attn = nn.ModuleDict(
            {m: CrossModalAttention(d_model, d_model, n_heads, dropout=dropout) for m in self.dims}
        )
        self.norm = nn.ModuleDict({m: nn.LayerNorm(d_model) for m in self.dims})
        self.last_attention: dict[str, Tensor] = {}

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, T_m, d_m) or (B, d_m)} -> (B, 2 * d_model), [pooled first; pooled second] in sorted order."""
        check_inputs(inputs, self.modalities, dims=self.dims, ndim=(2, 3))
        inputs = _cast_inputs(self, inputs)
        x = {m: self.proj[m](_as_tokens(inputs[m])) for m in self.modalities}  # (B, T_m, d_model)
        real = {m: real_tokens(_as_tokens(inputs[m])) if self.mask_zero_tokens else None for m in self.modalities}
        a, b = self.modalities
        pooled, attention = [], {}
        for m, other in ((a, b), (b, a)):
            context = real[other]
            if context is not None:
                empty = ~context.any(dim=1)  # (B,) nothing to attend to: attend to the padding, then drop the output
                context = context | empty[:, None]
            y, w = self.attn[m](x[m], x[other], context)  # (B, T_m, d_model), (B, T_m, T_other)
            if context is not None:
                y = y * (~empty).to(y.dtype)[:, None, None]
            attention[f"{m}->{other}"] = w.detach()
            pooled.append(pool_tokens(self.norm[m](x[m] + y), real[m]))  # (B, d_model)
        self.last_attention = attention
        return torch.cat(pooled, dim=-1)


class TransformerFusion(nn.Module):
    """Joint Transformer encoder over [CLS; tokens of each modality]; returns the final CLS state (B, d_model).

    Each modality's tokens are projected to d_model and get sinusoidal positions (restarting at 0 per
    modality) plus a learned modality-type embedding; pre-norm EncoderBlocks, then a final LayerNorm.
    """

    def __init__(
        self,
        dims: Mapping[str, int],
        d_model: int,
        n_heads: int = 4,
        n_layers: int = 2,
        max_len: int = 256,
        dropout: float = 0.0,
        d_ff: int | None = None,
        mask_zero_tokens: bool = False,
    ):
        super().__init__()
        self.mask_zero_tokens = mask_zero_tokens
        self.dims = _sorted_dims(dims)
        self.modalities = list(self.dims)
        self.d_model, self.out_dim, self.max_len = d_model, d_model, max_len
        self.proj = nn.ModuleDict({m: nn.Linear(d, d_model) for m, d in self.dims.items()})
        self.cls = nn.Parameter(torch.randn(1, 1, d_model) * 0.02)
        self.modality_emb = nn.Parameter(torch.randn(len(self.dims), d_model) * 0.02)  # row i: i-th sorted modality
        self.register_buffer("pos", sinusoidal_positional_encoding(max_len, d_model), persistent=False)
        self.blocks = nn.ModuleList(
            EncoderBlock(d_model, n_heads, d_ff or 4 * d_model, dropout, activation="gelu", norm_first=True)
            for _ in range(n_layers)
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: (B, T_m, d_m) or (B, d_m)} -> (B, d_model)."""
        B = check_inputs(inputs, self.modalities, dims=self.dims, ndim=(2, 3))
        inputs = _cast_inputs(self, inputs)
        seq = [self.cls.expand(B, -1, -1)]  # (B, 1, d_model)
        pad = [torch.zeros(B, 1, dtype=torch.bool, device=seq[0].device)]  # the CLS token is never padding
        for i, m in enumerate(self.modalities):
            tokens = _as_tokens(inputs[m])
            x = self.proj[m](tokens)  # (B, T_m, d_model)
            if x.size(1) > self.max_len:
                raise ModalityError(f"modality {m!r} has {x.size(1)} tokens, more than max_len={self.max_len}")
            seq.append(x + self.pos[: x.size(1)] + self.modality_emb[i])
            if self.mask_zero_tokens:
                pad.append(~real_tokens(tokens))
        h = torch.cat(seq, dim=1)  # (B, 1 + sum T_m, d_model)
        key_padding_mask = torch.cat(pad, dim=1) if self.mask_zero_tokens else None  # (B, 1 + sum T_m) True = pad
        for block in self.blocks:
            h = block(h, key_padding_mask=key_padding_mask)
        return self.norm(h[:, 0])  # (B, d_model) the CLS state


# --------------------------------------------------------------------------- classifier


def drop_random_modality(feats: dict[str, Tensor], p: float) -> dict[str, Tensor]:
    """With probability p per sample, zero one uniformly chosen modality of that sample (never all of them).

    With a single modality nothing is dropped. Returns a new dict; tensors keep their shapes.
    """
    mods = sorted(feats)
    if p <= 0.0 or len(mods) < 2:
        return dict(feats)
    x0 = feats[mods[0]]
    B = x0.shape[0]
    drop = torch.rand(B, device=x0.device) < p  # (B,) which samples lose a modality
    which = torch.randint(len(mods), (B,), device=x0.device)  # (B,) and which one
    out = {}
    for i, m in enumerate(mods):
        keep = ~(drop & (which == i))  # (B,)
        out[m] = feats[m] * keep.view(B, *[1] * (feats[m].dim() - 1)).to(feats[m].dtype)
    return out


class MultimodalClassifier(nn.Module):
    """Encoders (ModuleDict, sorted keys) -> fusion -> head; forward({m: raw input}) -> logits (B, n_classes).

    The head is Dropout + Linear, or an MLP with one hidden layer when ``hidden_dim`` is given. A
    Linear head on ConcatFusion is additive across modalities (it cannot learn an XOR between them);
    the hidden layer lets early fusion model interactions. With a LateFusion the encoders must output
    logits and there is no head. ``modality_dropout`` p: in training only, each sample with
    probability p has one randomly chosen modality's encoded representation zeroed (never all), which
    teaches the model to cope with a missing modality; eval is unaffected.
    """

    def __init__(
        self,
        encoders: Mapping[str, nn.Module],
        fusion: nn.Module,
        n_classes: int,
        dropout: float = 0.1,
        modality_dropout: float = 0.0,
        hidden_dim: int | None = None,
    ):
        super().__init__()
        self.encoders = nn.ModuleDict({m: encoders[m] for m in sorted(encoders)})
        self.modalities = list(self.encoders)
        fused = getattr(fusion, "modalities", None)
        if fused is not None and sorted(fused) != self.modalities:
            raise ValueError(f"encoders {self.modalities} and fusion modalities {sorted(fused)} differ")
        if not 0.0 <= modality_dropout < 1.0:
            raise ValueError(f"modality_dropout must be in [0, 1), got {modality_dropout}")
        self.fusion, self.n_classes, self.modality_dropout = fusion, n_classes, modality_dropout
        self.late = isinstance(fusion, LateFusion)
        if self.late:
            if fusion.out_dim not in (None, n_classes):
                raise ValueError(f"LateFusion has out_dim {fusion.out_dim}, classifier n_classes {n_classes}")
            self.head: nn.Module = nn.Identity()
        elif hidden_dim is None:
            self.head = nn.Sequential(nn.Dropout(dropout), nn.Linear(fusion.out_dim, n_classes))
        else:
            self.head = nn.Sequential(
                nn.Dropout(dropout),
                nn.Linear(fusion.out_dim, hidden_dim),
                nn.ReLU(),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, n_classes),
            )

    def encode(self, inputs: dict[str, Tensor]) -> dict[str, Tensor]:
        """Encode each modality; applies modality dropout in training mode."""
        check_inputs(inputs, self.modalities)
        feats = {m: self.encoders[m](inputs[m]) for m in self.modalities}
        if self.training and self.modality_dropout > 0.0:
            feats = drop_random_modality(feats, self.modality_dropout)
        return feats

    def forward(self, inputs: dict[str, Tensor]) -> Tensor:
        """{m: raw input (B, ...)} -> logits (B, n_classes)."""
        fused = self.fusion(self.encode(inputs))
        dtype = next((p.dtype for p in self.head.parameters()), None)  # a parameter-free fusion keeps the input dtype
        return self.head(fused if dtype is None else fused.to(dtype))


# --------------------------------------------------------------------------- factory


def build_fusion(name: str, dims: Mapping[str, int], n_classes: int, d_model: int = 64, **kw: object) -> nn.Module:
    """Build a fusion method of FUSION_METHODS by name; ``dims`` maps modality -> encoder output size.

    Vector fusions get out_dim = d_model ("concat" keeps the plain concatenation unless out_dim is
    passed); late fusions need every dim equal to n_classes (the encoders output logits); extra
    keyword arguments go to the constructor (rank, n_heads, n_layers, ...).
    """
    if name == "concat":
        return ConcatFusion(dims, **kw)
    if name == "weighted":
        return WeightedSumFusion(dims, d_model, **kw)
    if name == "gated":
        return GatedFusion(dims, d_model, **kw)
    if name == "tensor":
        return TensorFusion(dims, d_model, **kw)
    if name == "low_rank":
        return LowRankTensorFusion(dims, d_model, **kw)
    if name in ("late_mean", "late_vote", "late_learned"):
        bad = {m: d for m, d in dims.items() if d != n_classes}
        if bad:
            raise ValueError(f"late fusion fuses logits: every dim must be n_classes={n_classes}, got {bad}")
        return LateFusion(sorted(dims), mode=name.removeprefix("late_"), n_classes=n_classes, **kw)
    if name == "cross_attention":
        return CrossModalAttentionFusion(dims, d_model, **kw)
    if name == "transformer":
        return TransformerFusion(dims, d_model, **kw)
    raise ValueError(f"unknown fusion {name!r}; choose one of {sorted(FUSION_METHODS)}")
