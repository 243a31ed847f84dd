"""Value checks of mmhelpers.attention against PyTorch's own attention and Transformer layers."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmhelpers.attention import (
    CrossModalAttention,
    DecoderBlock,
    EncoderBlock,
    FeedForward,
    MultiHeadAttention,
    causal_mask,
    scaled_dot_product_attention,
    sinusoidal_positional_encoding,
)

ATOL = 1e-5
RTOL = 1e-5


def close(a: torch.Tensor, b: torch.Tensor, atol: float = ATOL) -> None:
    """Assert equal values to atol 1e-5 (float32)."""
    torch.testing.assert_close(a, b, atol=atol, rtol=RTOL)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def _padding(lengths: list[int], t: int) -> torch.Tensor:
    """(B, t) bool, True at padded positions (nn.Transformer* convention)."""
    return torch.arange(t)[None, :] >= torch.tensor(lengths)[:, None]


# --------------------------------------------------------------------------- sdpa


def test_sdpa_no_mask_matches_torch():
    q, k, v = torch.randn(2, 5, 8), torch.randn(2, 5, 8), torch.randn(2, 5, 8)
    out, w = scaled_dot_product_attention(q, k, v)
    close(out, F.scaled_dot_product_attention(q, k, v))
    close(w.sum(-1), torch.ones(2, 5))
    close(w @ v, out)


def test_sdpa_bool_mask_matches_torch():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 6, 8), torch.randn(2, 6, 3)
    mask = torch.rand(2, 4, 6) > 0.4
    mask[..., 0] = True  # every row keeps at least one key
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))
    assert (w[~mask] == 0).all()
    close(w.sum(-1), torch.ones(2, 4))


def test_sdpa_float_mask_matches_torch():
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    mask = torch.randn(3, 5)  # additive bias, broadcast over batch
    out, _ = scaled_dot_product_attention(q, k, v, mask=mask)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_sdpa_causal_matches_torch_4d():
    q, k, v = (torch.randn(2, 3, 6, 4) for _ in range(3))  # (B, H, T, d)
    out, w = scaled_dot_product_attention(q, k, v, is_causal=True)
    close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    assert (w.triu(diagonal=1) == 0).all()
    close(w.sum(-1), torch.ones(2, 3, 6))


def test_sdpa_tq_ne_tk_4d_with_broadcast_mask():
    q, k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 7, 4), torch.randn(2, 2, 7, 5)
    mask = torch.rand(2, 1, 1, 7) > 0.3  # key padding shape, broadcast over heads and queries
    mask[..., 0] = True
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert out.shape == (2, 2, 3, 5) and w.shape == (2, 2, 3, 7)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask))


def test_sdpa_causal_tq_ne_tk_is_end_aligned():
    # our causal triangle is bottom-right aligned (a query block after a key cache);
    # PyTorch's is_causal aligns top-left for Tq != Tk, so compare with an explicit mask
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 5, 4), torch.randn(1, 5, 4)
    out, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    explicit = torch.ones(3, 5, dtype=torch.bool).tril(diagonal=2)
    close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=explicit))
    # the last query sees every key: same as no mask for that row
    close(out[:, -1], F.scaled_dot_product_attention(q, k, v)[:, -1])


def test_sdpa_fully_masked_row_gives_zeros_not_nan():
    q, k, v = torch.randn(1, 3, 4), torch.randn(1, 4, 4), torch.randn(1, 4, 4)
    mask = torch.ones(3, 4, dtype=torch.bool)
    mask[1] = False
    out, w = scaled_dot_product_attention(q, k, v, mask=mask)
    assert torch.isfinite(out).all() and torch.isfinite(w).all()
    assert (out[:, 1] == 0).all() and (w[:, 1] == 0).all()
    close(out[:, [0, 2]], F.scaled_dot_product_attention(q, k, v)[:, [0, 2]])
    # same for a float mask of -inf, and gradients stay finite
    fmask = torch.zeros(3, 4).masked_fill(~mask, float("-inf"))
    qg = q.clone().requires_grad_(True)
    out2, _ = scaled_dot_product_attention(qg, k, v, mask=fmask)
    close(out2, out)
    out2.sum().backward()
    assert torch.isfinite(qg.grad).all()


def test_sdpa_hand_computed_case():
    # d = 4 -> scale 1/2; scores = [2*ln3, 0] / 2 = [ln 3, 0] -> softmax = [3/4, 1/4]
    q = torch.tensor([[2.0, 0.0, 0.0, 0.0]])
    k = torch.tensor([[math.log(3.0), 0.0, 0.0, 0.0], [0.0, 5.0, 0.0, 0.0]])
    v = torch.tensor([[4.0, 0.0], [0.0, 8.0]])
    out, w = scaled_dot_product_attention(q, k, v)
    torch.testing.assert_close(w, torch.tensor([[0.75, 0.25]]))
    torch.testing.assert_close(out, torch.tensor([[3.0, 2.0]]))


def test_sdpa_dropout_returns_pre_dropout_weights():
    q, k, v = torch.randn(2, 4, 8), torch.randn(2, 4, 8), torch.randn(2, 4, 8)
    out, w = scaled_dot_product_attention(q, k, v, dropout_p=0.5)
    close(w.sum(-1), torch.ones(2, 4))
    assert not torch.allclose(out, w @ v)


# --------------------------------------------------------------------------- causal mask


def test_causal_mask_square_matches_tril_and_is_causal():
    for t in (1, 2, 5):
        assert torch.equal(causal_mask(t), torch.ones(t, t).tril().bool())
    q, k, v = (torch.randn(2, 6, 4) for _ in range(3))
    a, _ = scaled_dot_product_attention(q, k, v, mask=causal_mask(6))
    b, _ = scaled_dot_product_attention(q, k, v, is_causal=True)
    close(a, b)
    close(a, F.scaled_dot_product_attention(q, k, v, is_causal=True))


def test_causal_mask_rectangular_is_end_aligned():
    assert causal_mask(2, 4).tolist() == [[True, True, True, False], [True, True, True, True]]
    assert causal_mask(3, 2).tolist() == [[False, False], [True, False], [True, True]]
    assert causal_mask(3, 5).dtype == torch.bool and causal_mask(3, 5).shape == (3, 5)


# --------------------------------------------------------------------------- positional encoding


def test_sinusoidal_hand_values():
    d = 8
    pe = sinusoidal_positional_encoding(20, d)
    assert pe.shape == (20, d) and pe.dtype == torch.float32
    for p, i in [(1, 0), (3, 1), (7, 2), (19, 3)]:
        angle = p / 10000.0 ** (2 * i / d)
        assert pe[p, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-6)
        assert pe[p, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-6)
    pe100 = sinusoidal_positional_encoding(6, 4, base=100.0)
    assert pe100[5, 2].item() == pytest.approx(math.sin(5 / 100.0 ** (2 / 4)), abs=1e-6)
    assert pe100[5, 3].item() == pytest.approx(math.cos(5 / 100.0 ** (2 / 4)), abs=1e-6)


def test_sinusoidal_position_zero():
    pe = sinusoidal_positional_encoding(3, 10)
    assert pe[0].tolist() == [0.0, 1.0] * 5


def test_sinusoidal_relative_position_is_a_rotation():
    # for each frequency w: [sin((p+k)w), cos((p+k)w)] = R(kw) [sin(pw), cos(pw)],
    # R(a) = [[cos a, sin a], [-sin a, cos a]] built from PE[k] alone (independent of p)
    n, d = 40, 16
    pe = sinusoidal_positional_encoding(n, d).double()
    for k in (1, 5, 13):
        s, c = pe[k, 0::2], pe[k, 1::2]  # sin(kw), cos(kw), each (d/2,)
        rot = torch.zeros(d, d, dtype=torch.float64)
        rot[0::2, 0::2] = torch.diag(c)
        rot[0::2, 1::2] = torch.diag(s)
        rot[1::2, 0::2] = torch.diag(-s)
        rot[1::2, 1::2] = torch.diag(c)
        close(pe[k:], pe[: n - k] @ rot.T)


def test_sinusoidal_odd_d_raises():
    with pytest.raises(ValueError):
        sinusoidal_positional_encoding(4, 7)


# --------------------------------------------------------------------------- multi-head attention


def _pair(d_model=16, n_heads=4, **kw):
    """(ours, torch) multi-head attentions with the same weights, in eval mode."""
    ref = nn.MultiheadAttention(d_model, n_heads, batch_first=True, **kw).eval()
    ours = (
        MultiHeadAttention(d_model, n_heads, bias=kw.get("bias", True), kdim=kw.get("kdim"), vdim=kw.get("vdim"))
        .load_torch_(ref)
        .eval()
    )
    return ours, ref


def test_mha_self_attention_matches_torch():
    ours, ref = _pair()
    x = torch.randn(2, 5, 16)
    out, w = ours(x)
    out_ref, w_ref = ref(x, x, x)
    close(out, out_ref)
    close(w, w_ref)
    assert w.shape == (2, 5, 5)


def test_mha_per_head_weights_match_torch():
    ours, ref = _pair()
    x = torch.randn(2, 5, 16)
    _, w = ours(x, average_weights=False)
    _, w_ref = ref(x, x, x, average_attn_weights=False)
    assert w.shape == (2, 4, 5, 5)
    close(w, w_ref)
    close(w.mean(1), ours(x)[1])


def test_mha_key_padding_and_bool_mask_match_torch():
    ours, ref = _pair()
    x = torch.randn(3, 6, 16)
    kpm = _padding([6, 4, 2], 6)
    out, w = ours(x, key_padding_mask=kpm)
    out_ref, w_ref = ref(x, x, x, key_padding_mask=kpm)
    close(out, out_ref)
    close(w, w_ref)
    # the same padding as a (B, Tq, Tk) keep-mask in our convention; torch's bool mask is inverted
    keep = (~kpm)[:, None, :].expand(3, 6, 6)
    out2, _ = ours(x, mask=keep)
    close(out2, out_ref)
    # a random 2-D bool mask (True = may attend here, True = blocked in nn.MultiheadAttention)
    mask = torch.rand(6, 6) > 0.5
    mask.fill_diagonal_(True)
    out3, w3 = ours(x, mask=mask)
    out3_ref, w3_ref = ref(x, x, x, attn_mask=~mask)
    close(out3, out3_ref)
    close(w3, w3_ref)


def test_mha_causal_matches_torch():
    ours, ref = _pair()
    x = torch.randn(2, 7, 16)
    out, w = ours(x, is_causal=True)
    tmask = nn.Transformer.generate_square_subsequent_mask(7)
    out_ref, w_ref = ref(x, x, x, attn_mask=tmask, is_causal=True)
    close(out, out_ref)
    close(w, w_ref)


def test_mha_kdim_vdim_matches_torch():
    ours, ref = _pair(kdim=10, vdim=12)
    assert not ref._qkv_same_embed_dim
    q, k, v = torch.randn(2, 4, 16), torch.randn(2, 6, 10), torch.randn(2, 6, 12)
    kpm = _padding([6, 3], 6)
    out, w = ours(q, k, v, key_padding_mask=kpm)
    out_ref, w_ref = ref(q, k, v, key_padding_mask=kpm)
    assert out.shape == (2, 4, 16) and w.shape == (2, 4, 6)
    close(out, out_ref)
    close(w, w_ref)


def test_mha_no_bias_matches_torch():
    ours, ref = _pair(bias=False)
    x = torch.randn(2, 5, 16)
    close(ours(x)[0], ref(x, x, x)[0])


def test_mha_need_weights_false_and_bad_heads():
    out, w = MultiHeadAttention(8, 2)(torch.randn(1, 3, 8), need_weights=False)
    assert w is None and out.shape == (1, 3, 8)
    with pytest.raises(ValueError):
        MultiHeadAttention(10, 3)
    with pytest.raises(ValueError):
        MultiHeadAttention(16, 4).load_torch_(nn.MultiheadAttention(16, 2, batch_first=True))


# --------------------------------------------------------------------------- cross-modal attention


def test_cross_modal_matches_torch():
    ref = nn.MultiheadAttention(16, 4, kdim=12, vdim=12, batch_first=True).eval()
    ours = CrossModalAttention(16, 12, 4).load_torch_(ref).eval()
    text, image = torch.randn(2, 5, 16), torch.randn(2, 9, 12)
    ctx_mask = ~_padding([9, 6], 9)  # True = real token
    out, w = ours(text, image, context_mask=ctx_mask)
    out_ref, w_ref = ref(text, image, image, key_padding_mask=~ctx_mask)
    assert out.shape == (2, 5, 16) and w.shape == (2, 5, 9)
    close(out, out_ref)
    close(w, w_ref)
    out_nomask, _ = ours(text, image)
    close(out_nomask, ref(text, image, image)[0])


def test_cross_modal_padding_ignores_garbage():
    attn = CrossModalAttention(8, 6, 2, d_model=12).eval()
    x, ctx = torch.randn(2, 3, 8), torch.randn(2, 7, 6)
    ctx_mask = ~_padding([7, 4], 7)
    out, w = attn(x, ctx, ctx_mask)
    garbage = torch.where(ctx_mask[..., None], ctx, 1e3 * torch.randn_like(ctx))
    out_g, w_g = attn(x, garbage, ctx_mask)
    close(out_g, out)
    close(w_g, w)
    assert (w[1, :, 4:] == 0).all()
    assert out.shape == (2, 3, 8)  # back in query space for a residual add
    with pytest.raises(ValueError):
        attn.load_torch_(nn.MultiheadAttention(8, 2, kdim=6, vdim=6, batch_first=True))


# --------------------------------------------------------------------------- encoder block


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_encoder_block_matches_torch(norm_first, activation):
    ref = nn.TransformerEncoderLayer(
        16, 4, 32, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = EncoderBlock(16, 4, 32, dropout=0.1, activation=activation, norm_first=norm_first).load_torch_(ref).eval()
    x = torch.randn(3, 6, 16)
    kpm = _padding([6, 5, 3], 6)
    with torch.no_grad():  # no grad -> torch may take its fused fast path; it must still agree
        close(ours(x), ref(x))
        close(ours(x, key_padding_mask=kpm), ref(x, src_key_padding_mask=kpm))
    # with autograd on, torch takes the plain path
    close(ours(x, key_padding_mask=kpm), ref(x, src_key_padding_mask=kpm))


def test_encoder_block_bool_mask_matches_torch():
    ref = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True).eval()
    ours = EncoderBlock(16, 4, 32).load_torch_(ref).eval()
    x = torch.randn(2, 5, 16)
    mask = torch.rand(5, 5) > 0.5
    mask.fill_diagonal_(True)
    close(ours(x, mask=mask), ref(x, src_mask=~mask))


def test_encoder_block_load_checks_settings():
    ref = nn.TransformerEncoderLayer(16, 4, 32, batch_first=True, norm_first=True)
    with pytest.raises(ValueError):
        EncoderBlock(16, 4, 32, norm_first=False).load_torch_(ref)
    with pytest.raises(ValueError):
        EncoderBlock(16, 4, 32, activation="gelu", norm_first=True).load_torch_(ref)
    with pytest.raises(ValueError):
        FeedForward(16, 32, activation="tanh")


# --------------------------------------------------------------------------- decoder block


@pytest.mark.parametrize("norm_first", [False, True])
@pytest.mark.parametrize("activation", ["relu", "gelu"])
def test_decoder_block_matches_torch(norm_first, activation):
    ref = nn.TransformerDecoderLayer(
        16, 4, 32, dropout=0.1, activation=activation, batch_first=True, norm_first=norm_first
    ).eval()
    ours = DecoderBlock(16, 4, 32, dropout=0.1, activation=activation, norm_first=norm_first).load_torch_(ref).eval()
    x, mem = torch.randn(2, 6, 16), torch.randn(2, 8, 16)
    mpm = _padding([8, 5], 8)
    tmask = nn.Transformer.generate_square_subsequent_mask(6)
    out = ours(x, mem, memory_key_padding_mask=mpm)
    out_ref = ref(x, mem, tgt_mask=tmask, tgt_is_causal=True, memory_key_padding_mask=mpm)
    close(out, out_ref)
    close(ours(x, mem), ref(x, mem, tgt_mask=tmask, tgt_is_causal=True))
    assert ours.last_self_attn.shape == (2, 6, 6) and not ours.last_self_attn.requires_grad
    assert (ours.last_self_attn.triu(diagonal=1) == 0).all()
    assert ours.last_cross_attn.shape == (2, 6, 8)


@pytest.mark.parametrize("norm_first", [False, True])
def test_gpt_block_matches_encoder_layer_with_causal_mask(norm_first):
    ref = nn.TransformerEncoderLayer(16, 4, 32, activation="gelu", batch_first=True, norm_first=norm_first).eval()
    ours = DecoderBlock(16, 4, 32, activation="gelu", norm_first=norm_first, cross_attention=False)
    ours.load_torch_(ref).eval()
    assert not hasattr(ours, "cross_attn")
    x = torch.randn(2, 7, 16)
    tmask = nn.Transformer.generate_square_subsequent_mask(7)
    close(ours(x), ref(x, src_mask=tmask, is_causal=True))
    assert ours.last_cross_attn is None
    with pytest.raises(ValueError):
        ours(x, memory=torch.randn(2, 3, 16))
    with pytest.raises(ValueError):
        DecoderBlock(16, 4, 32, cross_attention=True)(x)


@pytest.mark.parametrize("cross_attention", [True, False])
def test_decoder_block_is_causal(cross_attention):
    block = DecoderBlock(16, 4, 32, cross_attention=cross_attention).eval()
    mem = torch.randn(2, 5, 16) if cross_attention else None
    x = torch.randn(2, 8, 16)
    out = block(x, mem)
    for t in (0, 3, 6):
        x2 = x.clone()
        x2[:, t + 1 :] = torch.randn_like(x2[:, t + 1 :]) * 10
        out2 = block(x2, mem)
        close(out2[:, : t + 1], out[:, : t + 1])
        assert not torch.allclose(out2[:, t + 1 :], out[:, t + 1 :])


def test_decoder_block_d_memory():
    block = DecoderBlock(16, 4, 32, d_memory=24).eval()
    out = block(torch.randn(2, 5, 16), torch.randn(2, 3, 24))
    assert out.shape == (2, 5, 16) and block.last_cross_attn.shape == (2, 5, 3)


@pytest.mark.parametrize("norm_first", [False, True])
def test_decoder_block_gradients_reach_every_parameter(norm_first):
    block = DecoderBlock(16, 4, 32, norm_first=norm_first)
    x, mem = torch.randn(2, 6, 16), torch.randn(2, 4, 16)
    out = block(x, mem)
    if norm_first:
        loss = out.sum()
    else:
        # post-norm ends in LayerNorm with unit gain: the sum of its output is the constant
        # sum(bias), so weight the outputs to get a loss that depends on everything
        loss = (out * torch.randn_like(out)).sum()
    loss.backward()
    for name, p in block.named_parameters():
        assert p.grad is not None, name
        if name.endswith("k_proj.bias"):
            # adding the same vector to every key shifts each score row by a constant,
            # which softmax ignores: the key bias gets (numerically) zero gradient
            assert p.grad.abs().max() < 1e-5, name
        else:
            assert p.grad.abs().sum() > 0, name
