"""Value checks of mmhelpers.vlm: masks, shapes, causality, visual pathway, cache, weight transfer, a learning test."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from mmhelpers.vlm import FUSIONS, PROJECTORS, MiniVLM, VLMConfig, attention_mask, grid_to_tokens, with_prefix_bias

pytestmark = pytest.mark.usefixtures("one_thread")

B, T, N, D_VISUAL = 3, 6, 4, 6


def _cfg(fusion: str = "prefix", projector: str = "mlp", **kw) -> VLMConfig:
    """A tiny config; the cross-attention gate is off so that a fresh model already looks at the image."""
    base = dict(vocab_size=11, block_size=7, n_layer=2, n_head=2, n_embd=16, dropout=0.0, d_visual=D_VISUAL)
    base.update(n_visual=N, n_queries=3, gated_cross=False, fusion=fusion, projector=projector)
    return VLMConfig(**(base | kw))


def _model(fusion: str = "prefix", projector: str = "mlp", seed: int = 0, **kw) -> MiniVLM:
    torch.manual_seed(seed)
    return MiniVLM(_cfg(fusion, projector, **kw)).eval()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 11, (B, T), generator=g), torch.randn(B, N, D_VISUAL, generator=g)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


# --------------------------------------------------------------------------- helpers and masks


def test_grid_to_tokens_is_row_major():
    grid = torch.arange(2 * 3 * 2 * 4).float().view(2, 3, 2, 4)  # (B, C, H, W)
    tokens = grid_to_tokens(grid)
    assert tokens.shape == (2, 8, 3)
    for h in range(2):
        for w in range(4):
            assert torch.equal(tokens[:, h * 4 + w], grid[:, :, h, w])


def test_attention_mask_by_hand():
    expected = torch.tensor(
        [  # keys: p0 p1 t0 t1 t2
            [1, 1, 0, 0, 0],  # prefix sees the whole prefix, no text
            [1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0],  # text sees the prefix and earlier text
            [1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(attention_mask(2, 3, "prefix"), expected)
    assert torch.equal(attention_mask(0, 3, "prefix"), torch.ones(3, 3).tril().bool())
    assert torch.equal(attention_mask(2, 3, "cross"), torch.ones(3, 3).tril().bool())
    with pytest.raises(ValueError):
        attention_mask(2, 3, "late")


def test_config_is_validated():
    for bad in (dict(fusion="late"), dict(projector="conv"), dict(n_embd=15)):
        with pytest.raises(ValueError):
            _cfg(**bad)


# --------------------------------------------------------------------------- forward


@pytest.mark.parametrize("projector", PROJECTORS)
@pytest.mark.parametrize("fusion", FUSIONS)
def test_shapes(fusion, projector):
    m, (idx, vis) = _model(fusion, projector), _inputs()
    n_out = 3 if projector == "queries" else N
    logits, loss = m(idx, vis, targets=idx)
    assert logits.shape == (B, T, 11) and loss.shape == () and torch.isfinite(loss)
    assert m.encode_visual(vis).shape == (B, n_out, 16)
    assert m.attention_maps(idx, vis).shape == (2, B, 2, T, n_out)
    assert m(idx)[0].shape == (B, T, 11) and m(idx)[1] is None
    with pytest.raises(ValueError):
        m(idx, vis[:, :3])  # wrong number of visual tokens


@pytest.mark.parametrize("fusion", FUSIONS)
def test_causal(fusion):
    m, (idx, vis) = _model(fusion), _inputs()
    other = idx.clone()
    other[:, 3] = (idx[:, 3] + 1) % 11
    a, b = m(idx, vis)[0], m(other, vis)[0]
    assert torch.equal(a[:, :3], b[:, :3])
    assert (a[:, 3:] - b[:, 3:]).abs().amax() > 1e-4


@pytest.mark.parametrize("fusion", FUSIONS)
def test_visual_input_changes_logits(fusion):
    m, (idx, vis) = _model(fusion), _inputs()
    a, b, text_only = m(idx, vis)[0], m(idx, torch.randn_like(vis))[0], m(idx)[0]
    assert (a - b).abs().amax() > 1e-4
    assert (a - text_only).abs().amax() > 1e-4
    close(m(idx, visual_tokens=m.encode_visual(vis))[0], a)  # pre-projected tokens give the same result
    with pytest.raises(ValueError):
        m(idx, vis, visual_tokens=m.encode_visual(vis))


def test_cross_attention_gate_starts_closed():
    m, (idx, vis) = _model("cross", gated_cross=True), _inputs()
    assert torch.equal(m(idx, vis)[0], m(idx)[0])  # tanh(0) = 0: the language model is unchanged at first
    with torch.no_grad():
        for block in m.blocks:
            block.cross.gate.fill_(1.0)
    assert (m(idx, vis)[0] - m(idx)[0]).abs().amax() > 1e-4


@pytest.mark.parametrize("projector", ["linear", "mlp"])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_visual_order_known_only_through_projector_positions(fusion, projector):
    m, (idx, vis) = _model(fusion, projector), _inputs()
    perm = torch.tensor([2, 0, 3, 1])
    assert (m(idx, vis)[0] - m(idx, vis[:, perm])[0]).abs().amax() > 1e-4
    with torch.no_grad():
        m.projector.pos.zero_()
    close(m(idx, vis)[0], m(idx, vis[:, perm])[0])  # attention is blind to the order of its keys


def test_loss_ignores_minus_100():
    m, (idx, vis) = _model(), _inputs()
    targets = torch.roll(idx, -1, dims=1)
    targets[:, -1] = -100
    targets[0, :2] = -100
    logits, loss = m(idx, vis, targets)
    keep = targets != -100
    by_hand = -F.log_softmax(logits, -1)[keep].gather(1, targets[keep][:, None]).mean()
    close(loss, by_hand)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_attention_maps(fusion):
    m, (idx, vis) = _model(fusion), _inputs()
    m.train()
    maps = m.attention_maps(idx, vis)
    assert m.training  # mode restored
    sums = maps.sum(-1)  # (L, B, nh, T)
    if fusion == "cross":
        close(sums, torch.ones_like(sums))
    else:  # the rest of each row goes to the text
        assert bool((sums > 0).all() and (sums < 1).all())
    with pytest.raises(ValueError):
        m.attention_maps(idx, None)


# --------------------------------------------------------------------------- cache


@pytest.mark.parametrize("with_visual", [True, False])
@pytest.mark.parametrize("fusion", FUSIONS)
def test_cache_matches_full_forward(fusion, with_visual):
    m, (idx, vis) = _model(fusion, "queries"), _inputs()
    vt = m.encode_visual(vis) if with_visual else None
    full = m(idx, visual_tokens=vt)[0]
    cache = m.new_cache(vt)
    assert cache.n_prefix == (3 if with_visual and fusion == "prefix" else 0)
    steps = [m.forward_step(idx[:, :3], cache)] + [m.forward_step(idx[:, t : t + 1], cache) for t in range(3, T)]
    close(torch.cat(steps, dim=1), full)
    assert cache.n_text == T
    rows = torch.tensor([2, 2, 0])
    cache.reorder(rows)  # beam search: rows follow their source
    longer = torch.cat([idx, idx[:, :1]], dim=1)[rows]
    expected = m(longer, visual_tokens=None if vt is None else vt[rows])[0][:, -1:]
    close(m.forward_step(longer[:, -1:], cache), expected)
    with pytest.raises(ValueError):
        m.forward_step(idx[:, :2], cache)  # past block_size


def test_cache_keeps_the_prefix_states_on_request():
    """``keep_states``: the prefix's output of every block, as a full pass computes it; reordered with the cache."""
    m, (_, vis) = _model("prefix", "linear"), _inputs()
    vt = m.encode_visual(vis)
    assert m.new_cache(vt).states is None
    cache = m.new_cache(vt, keep_states=True)
    assert len(cache.states) == m.cfg.n_layer and cache.states[0].shape == vt.shape
    x, mask = vt, attention_mask(N, 0)
    for block, state in zip(m.blocks, cache.states, strict=True):
        x = block(x, mask)[0]
        close(state, x)
    rows = torch.tensor([1, 0, 0])
    last = cache.states[-1]
    cache.reorder(rows)
    close(cache.states[-1], last[rows])


@pytest.mark.parametrize("fusion", FUSIONS)
def test_forward_step_last_positions_only(fusion):
    """``last=n``: the last n positions' logits, as without it, and the cache holds every position's keys/values."""
    m, (idx, vis) = _model(fusion, "linear"), _inputs()
    vt = m.encode_visual(vis)
    full_cache, last_cache = m.new_cache(vt), m.new_cache(vt)
    full = m.forward_step(idx[:, :5], full_cache)
    close(m.forward_step(idx[:, :5], last_cache, last=2), full[:, -2:])
    close(m.forward_step(idx[:, 5:6], last_cache), m.forward_step(idx[:, 5:6], full_cache))  # the caches agree


def test_prefix_bias_steers_the_prefix_and_the_cache_agrees():
    """A bias on the visual tokens' attention among themselves: the cached prefix and a full pass agree with it, a
    zero bias changes nothing, a strong one changes the logits, and the prefix still sees no text."""
    m, (idx, vis) = _model("prefix", "linear"), _inputs()
    vt = m.encode_visual(vis)
    bias = 10 * torch.randn(B, 2, N, N)  # strong: the tiny model's prefix barely moves its logits
    full = m(idx, visual_tokens=vt, prefix_bias=bias)[0]
    cache = m.new_cache(vt, prefix_bias=bias)
    close(m.forward_step(idx, cache), full)
    close(m(idx, visual_tokens=vt, prefix_bias=torch.zeros(B, 2, N, N))[0], m(idx, visual_tokens=vt)[0])
    assert not torch.allclose(full, m(idx, visual_tokens=vt)[0], atol=1e-4)
    mask = with_prefix_bias(attention_mask(N, T), bias)
    assert mask.shape == (B, 2, N + T, N + T) and torch.equal(mask[..., :N, :N], bias)
    assert bool(torch.isinf(mask[..., :N, N:]).all())  # the prefix still sees no text
    with pytest.raises(ValueError, match="prefix"):
        m.new_cache(None, prefix_bias=bias)
    with pytest.raises(ValueError, match="prefix"):
        _model("cross", "linear").new_cache(vt, prefix_bias=bias)


# --------------------------------------------------------------------------- transfer and parameter counts


@pytest.mark.parametrize("fusion", FUSIONS)
def test_pretrained_language_model_transfers(fusion):
    torch.manual_seed(0)
    lm = MiniVLM(_cfg("prefix"))
    opt = torch.optim.AdamW(lm.parameters(), lr=1e-2)
    idx = torch.randint(0, 11, (8, T))
    for _ in range(5):  # text-only pre-training moves every language-model weight away from its init
        loss = lm(idx[:, :-1], targets=idx[:, 1:])[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
    lm.eval()
    vlm = _model(fusion, gated_cross=True, seed=1)
    projector_before = {k: v.clone() for k, v in vlm.projector.state_dict().items()}
    assert vlm.load_language_model_(lm.language_model_state()) is vlm
    test_idx, vis = _inputs()
    assert torch.equal(vlm(test_idx)[0], lm(test_idx)[0])
    if fusion == "cross":  # closed gates: the image does not change the pre-trained model's output yet
        assert torch.equal(vlm(test_idx, vis)[0], lm(test_idx)[0])
    for k, v in vlm.projector.state_dict().items():
        assert torch.equal(v, projector_before[k])
    state = lm.language_model_state()
    assert not any(k.startswith("projector.") or ".cross." in k for k in state)
    with pytest.raises(KeyError):
        vlm.load_language_model_({k: v for k, v in state.items() if k != "ln_f.weight"})
    with pytest.raises(KeyError):
        vlm.load_language_model_(state | {"projector.pos": torch.zeros(N, 16)})


def test_num_parameters():
    for fusion in FUSIONS:
        m = _model(fusion, "linear")
        parts = {p: m.num_parameters(p) for p in ("projector", "decoder", "cross_attention")}
        assert sum(parts.values()) == m.num_parameters() == sum(p.numel() for p in m.parameters())
        assert parts["projector"] == D_VISUAL * 16 + 16 + N * 16  # Linear + bias + position embedding
        tied = m.lm_head.weight.numel()
        assert parts["decoder"] == sum(v.numel() for v in m.language_model_state().values()) - tied
        assert (parts["cross_attention"] == 0) == (fusion == "prefix")
    with pytest.raises(ValueError):
        m.num_parameters("head")


# --------------------------------------------------------------------------- learning


PROTOTYPES = 2.0 * torch.randn(4, D_VISUAL, generator=torch.Generator().manual_seed(5))


def _object_batch(n: int, g: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One of 4 objects at a random cell among noise; text ``BOS <object>`` with targets ``<object> EOS``."""
    c, cell = torch.randint(0, 4, (n,), generator=g), torch.randint(0, N, (n,), generator=g)
    vis = 0.5 * torch.randn(n, N, D_VISUAL, generator=g)
    vis[torch.arange(n), cell] += PROTOTYPES[c]
    word = 3 + c  # token ids 3..6 name the objects
    idx = torch.stack([torch.ones_like(c), word], dim=1)  # BOS word
    return vis, idx, torch.stack([word, torch.full_like(c, 2)], dim=1)  # word EOS


@torch.no_grad()
def _object_accuracy(m: MiniVLM, shuffle_images: bool = False) -> float:
    vis, idx, targets = _object_batch(512, torch.Generator().manual_seed(123))
    if shuffle_images:
        vis = vis.roll(1, dims=0)
    return (m.eval()(idx, vis)[0][:, 0].argmax(-1) == targets[:, 0]).float().mean().item()


@pytest.mark.parametrize("fusion", FUSIONS)
def test_learns_to_name_the_object_in_the_image(fusion):
    steps, g = 200, torch.Generator().manual_seed(0)
    m = _model(fusion, "mlp", vocab_size=8, block_size=4, n_embd=32, gated_cross=True)
    assert _object_accuracy(m) < 0.5  # chance is 0.25
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1 - s / steps)
    m.train()
    for _ in range(steps):
        vis, idx, targets = _object_batch(64, g)
        loss = m(idx, vis, targets)[1]
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    assert _object_accuracy(m) >= 0.97
    # the answer comes from the image (not from a leak of the next text token): wrong images, chance again
    assert _object_accuracy(m, shuffle_images=True) < 0.5
