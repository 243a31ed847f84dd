"""Contrastive losses against hand-computed values."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from mmhelpers.losses import info_nce, nt_xent


def test_info_nce_hand_case():
    a = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    b = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # similarities: diag 1, off-diag 0; with temperature 1 each row's loss is -log(e / (e + 1))
    expected = -math.log(math.e / (math.e + 1))
    assert abs(info_nce(a, b, 1.0).item() - expected) < 1e-6
    # swapping the pairs makes every row pick the wrong partner: loss -log(1 / (1 + e))
    assert abs(info_nce(a, b.flip(0), 1.0).item() + math.log(1 / (1 + math.e))) < 1e-6


def test_info_nce_is_symmetric_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(8, 16, generator=g), torch.randn(8, 16, generator=g)
    assert torch.allclose(info_nce(a, b), info_nce(b, a), atol=1e-6)
    assert torch.allclose(info_nce(3 * a, b), info_nce(a, b), atol=1e-6)  # normalised inside


def test_nt_xent_matches_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(4, 8, generator=g), torch.randn(4, 8, generator=g)
    z = F.normalize(torch.cat([z1, z2]), dim=-1)
    t = 0.5
    losses = []
    for i in range(8):
        partner = (i + 4) % 8
        num = math.exp((z[i] @ z[partner]).item() / t)
        den = sum(math.exp((z[i] @ z[k]).item() / t) for k in range(8) if k != i)
        losses.append(-math.log(num / den))
    assert abs(nt_xent(z1, z2, t).item() - sum(losses) / 8) < 1e-5


def test_nt_xent_low_for_identical_views_high_for_random():
    g = torch.Generator().manual_seed(2)
    z = torch.randn(16, 32, generator=g)
    assert nt_xent(z, z, 0.1).item() < 0.1
    assert nt_xent(z, torch.randn(16, 32, generator=g), 0.1).item() > 1.0


@pytest.mark.parametrize("loss", [info_nce, nt_xent])
def test_empty_batch_raises(loss):
    with pytest.raises(ValueError, match="empty batch: .* have 0 rows"):
        loss(torch.empty(0, 8), torch.empty(0, 8))


@pytest.mark.parametrize("loss", [info_nce, nt_xent])
def test_mismatched_shapes_and_bad_temperature_raise(loss):
    with pytest.raises(ValueError, match=r"must both be \(B, D\) of the same shape, got \(3, 4\) and \(2, 4\)"):
        loss(torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"got \(3,\) and \(3,\)"):
        loss(torch.randn(3), torch.randn(3))
    for bad in (0.0, -0.1):
        with pytest.raises(ValueError, match="temperature must be > 0"):
            loss(torch.randn(3, 4), torch.randn(3, 4), bad)


def test_batch_of_one_is_zero_loss():
    # a single pair has no negatives: nothing to tell apart, loss 0 (defined, unlike the empty batch)
    a, b = torch.randn(1, 4), torch.randn(1, 4)
    assert info_nce(a, b).item() == 0.0 and nt_xent(a, b).item() == 0.0
