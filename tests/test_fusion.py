"""Value checks of mmhelpers.fusion: known values, equivalences, gates, attention maps, errors, and a toy XOR."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from mmhelpers.errors import ModalityError
from mmhelpers.fusion import (
    FUSION_METHODS,
    ConcatFusion,
    CrossModalAttentionFusion,
    GatedFusion,
    LateFusion,
    LowRankTensorFusion,
    MultimodalClassifier,
    TensorFusion,
    TransformerFusion,
    WeightedSumFusion,
    build_fusion,
    check_inputs,
    drop_random_modality,
    pool_tokens,
    tensor_fusion,
)

ALL = [
    "concat",
    "weighted",
    "gated",
    "tensor",
    "low_rank",
    "late_mean",
    "late_vote",
    "late_learned",
    "cross_attention",
    "transformer",
]
DIMS = {"audio": 6, "image": 5}
TOKENS = {"audio": 7, "image": 3}
N_CLASSES, D_MODEL, B = 10, 16, 4


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5) -> None:
    """Assert equal values to atol (float32)."""
    torch.testing.assert_close(a, b, atol=atol, rtol=1e-5)


def make(name: str) -> nn.Module:
    """A small fusion of each kind on DIMS (late fusions on N_CLASSES logits)."""
    dims = {m: N_CLASSES for m in DIMS} if name.startswith("late_") else DIMS
    return build_fusion(name, dims, N_CLASSES, d_model=D_MODEL)


def inputs_for(name: str, batch: int = B, requires_grad: bool = False) -> dict[str, torch.Tensor]:
    """Random inputs of the right kind: vectors, logits or token sequences."""
    out = {}
    for m, d in DIMS.items():
        if name.startswith("late_"):
            shape = (batch, N_CLASSES)
        elif name in ("cross_attention", "transformer"):
            shape = (batch, TOKENS[m], d)
        else:
            shape = (batch, d)
        out[m] = torch.randn(*shape, requires_grad=requires_grad)
    return out


# --------------------------------------------------------------------------- every method


def test_fusion_methods_names_match_build_fusion():
    assert list(FUSION_METHODS) == ALL
    assert all(isinstance(v, str) and v for v in FUSION_METHODS.values())
    with pytest.raises(ValueError, match="unknown fusion"):
        build_fusion("nope", DIMS, N_CLASSES)


@pytest.mark.parametrize("name", ALL)
def test_output_shape(name):
    f = make(name)
    assert isinstance(f.out_dim, int)
    assert f(inputs_for(name)).shape == (B, f.out_dim)


@pytest.mark.parametrize("name", [n for n in ALL if n != "late_vote"])
def test_gradients_reach_every_modality(name):
    f = make(name)
    x = inputs_for(name, requires_grad=True)
    out = f(x)
    (out * torch.randn_like(out)).sum().backward()
    for m, t in x.items():
        assert t.grad is not None and t.grad.abs().sum() > 0, m


def test_late_vote_has_no_gradient():
    # argmax is piecewise constant: the vote is detached by design, so nothing can flow back to the inputs
    f = make("late_vote")
    x = inputs_for("late_vote", requires_grad=True)
    out = f(x)
    assert not out.requires_grad
    with pytest.raises(RuntimeError):
        out.sum().backward()


@pytest.mark.parametrize("name", ALL)
def test_insertion_order_does_not_matter(name):
    f = make(name).eval()
    x = inputs_for(name)
    reordered = {m: x[m] for m in reversed(list(x))}
    assert list(reordered) != list(x)
    torch.testing.assert_close(f(reordered), f(x), atol=0, rtol=0)


@pytest.mark.parametrize("name", ALL)
def test_parameter_counts(name):
    n = sum(p.numel() for p in make(name).parameters())
    if name in ("concat", "late_mean", "late_vote"):
        assert n == 0  # plain concatenation and fixed combination rules: nothing to learn (the head learns)
    else:
        assert n > 0


def test_build_fusion_late_needs_logit_dims():
    with pytest.raises(ValueError, match="n_classes=10"):
        build_fusion("late_mean", DIMS, N_CLASSES)


# --------------------------------------------------------------------------- input checks


def test_check_inputs_returns_batch_size():
    assert check_inputs({"b": torch.zeros(3, 2), "a": torch.zeros(3, 5, 4)}, ["a", "b"]) == 3


def test_missing_modality_raises():
    f = ConcatFusion(DIMS)
    with pytest.raises(ModalityError, match="missing modality 'image'"):
        f({"audio": torch.randn(2, 6)})


def test_extra_modality_raises():
    f = ConcatFusion(DIMS)
    with pytest.raises(ModalityError, match="unexpected modality 'text'"):
        f({"audio": torch.randn(2, 6), "image": torch.randn(2, 5), "text": torch.randn(2, 3)})


@pytest.mark.parametrize("name", ["concat", "late_mean", "transformer"])
def test_mismatched_batch_sizes_raise(name):
    x = inputs_for(name)
    x["image"] = x["image"][:3]
    with pytest.raises(ModalityError) as err:
        make(name)(x)
    msg = str(err.value)
    assert "'image'" in msg and "3" in msg and "4" in msg


def test_wrong_feature_size_and_rank_raise():
    f = ConcatFusion(DIMS)
    with pytest.raises(ModalityError, match="'image' has feature size 4, expected 5"):
        f({"audio": torch.randn(2, 6), "image": torch.randn(2, 4)})
    with pytest.raises(ModalityError, match="'audio' has shape"):
        f({"audio": torch.randn(2, 3, 6), "image": torch.randn(2, 5)})


# --------------------------------------------------------------------------- pooled-vector fusions


def test_concat_projection_parameters():
    f = build_fusion("concat", DIMS, N_CLASSES, out_dim=8)
    assert f.out_dim == 8 and sum(p.numel() for p in f.parameters()) == (6 + 5 + 1) * 8


def test_concat_is_sorted_concatenation():
    f = ConcatFusion({"image": 2, "audio": 3})
    a, i = torch.randn(4, 3), torch.randn(4, 2)
    assert f.out_dim == 5
    torch.testing.assert_close(f({"image": i, "audio": a}), torch.cat([a, i], dim=-1))
    assert ConcatFusion(DIMS, out_dim=8)(inputs_for("concat")).shape == (B, 8)


def test_pool_tokens():
    x = torch.arange(12.0).view(1, 4, 3)
    close(pool_tokens(x), x.mean(1))
    mask = torch.tensor([[True, True, False, False]])
    close(pool_tokens(x, mask), torch.tensor([[1.5, 2.5, 3.5]]))


def test_tensor_fusion_known_values_1d():
    out = tensor_fusion([torch.tensor([[2.0]]), torch.tensor([[3.0]])])
    torch.testing.assert_close(out, torch.tensor([[1.0, 3.0, 2.0, 6.0]]))


def test_tensor_fusion_known_values_2d():
    # [1, 2, 5] x [1, 3, 7], rows of the outer product one after the other
    a = torch.tensor([[2.0, 5.0], [0.0, 1.0]])
    b = torch.tensor([[3.0, 7.0], [1.0, 0.0]])
    expected = torch.tensor(
        [
            [1.0, 3.0, 7.0, 2.0, 6.0, 14.0, 5.0, 15.0, 35.0],
            [1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 1.0, 1.0, 0.0],
        ]
    )
    torch.testing.assert_close(tensor_fusion([a, b]), expected)


def test_tensor_fusion_three_modalities():
    a, b, c = torch.tensor([[2.0]]), torch.tensor([[3.0]]), torch.tensor([[5.0]])
    torch.testing.assert_close(tensor_fusion([a, b, c]), torch.tensor([[1.0, 5, 3, 15, 2, 10, 6, 30]]))


def test_tensor_fusion_module_dims_and_parameters():
    dims = {"a": 3, "b": 4, "c": 2}
    f = TensorFusion(dims, out_dim=8)
    assert f.fused_dim == 4 * 5 * 3
    assert sum(p.numel() for p in f.parameters()) == (4 * 5 * 3 + 1) * 8
    x = {m: torch.randn(2, d) for m, d in dims.items()}
    close(f(x), f.linear(tensor_fusion([x["a"], x["b"], x["c"]])))


def test_low_rank_equals_tensor_fusion_with_reconstructed_weight():
    dims, out_dim, rank = {"audio": 3, "image": 4}, 5, 3
    lmf = LowRankTensorFusion(dims, out_dim, rank=rank)
    with torch.no_grad():
        lmf.bias.normal_()
    tf = TensorFusion(dims, out_dim)
    w_a, w_b = lmf.factors["audio"], lmf.factors["image"]  # (rank, d+1, out)
    w_full = torch.zeros(out_dim, dims["audio"] + 1, dims["image"] + 1)
    for o in range(out_dim):
        for i in range(dims["audio"] + 1):
            for j in range(dims["image"] + 1):
                w_full[o, i, j] = sum(w_a[r, i, o] * w_b[r, j, o] for r in range(rank))
    with torch.no_grad():
        tf.linear.weight.copy_(w_full.reshape(out_dim, -1))
        tf.linear.bias.copy_(lmf.bias)
    x = {"audio": torch.randn(6, 3), "image": torch.randn(6, 4)}
    close(lmf(x), tf(x))


def test_low_rank_equals_tensor_fusion_three_modalities():
    dims, out_dim = {"a": 2, "b": 3, "c": 2}, 4
    lmf = LowRankTensorFusion(dims, out_dim, rank=2)
    tf = TensorFusion(dims, out_dim)
    w = torch.einsum("rio,rjo,rko->oijk", lmf.factors["a"], lmf.factors["b"], lmf.factors["c"])
    with torch.no_grad():
        tf.linear.weight.copy_(w.reshape(out_dim, -1))
        tf.linear.bias.copy_(lmf.bias)
    x = {m: torch.randn(5, d) for m, d in dims.items()}
    close(lmf(x), tf(x))
    assert sum(p.numel() for p in lmf.parameters()) == 2 * (3 + 4 + 3) * out_dim + out_dim


def test_weighted_sum_weights_and_values():
    f = WeightedSumFusion(DIMS, out_dim=8)
    close(f.weights().sum(), torch.tensor(1.0))
    with torch.no_grad():
        f.logits.copy_(torch.log(torch.tensor([1.0, 3.0])))  # audio 0.25, image 0.75
    close(f.weights(), torch.tensor([0.25, 0.75]))
    x = inputs_for("weighted")
    close(f(x), 0.25 * f.proj["audio"](x["audio"]) + 0.75 * f.proj["image"](x["image"]))


def test_gated_gates_two_modalities():
    f = GatedFusion(DIMS, out_dim=8)
    f(inputs_for("gated") | {"audio": 5 * torch.randn(B, 6)})
    g = f.last_gates
    assert g.shape == (B, 2, 8) and not g.requires_grad
    assert bool(((g > 0) & (g < 1)).all())
    close(g.sum(dim=1), torch.ones(B, 8))


def test_gated_saturated_gate_selects_first_modality():
    f = GatedFusion(DIMS, out_dim=8)
    with torch.no_grad():
        f.gate.weight.zero_()
        f.gate.bias.fill_(50.0)  # z = sigmoid(50) = 1: all of the first sorted modality ("audio")
    x = inputs_for("gated")
    close(f(x), torch.tanh(f.proj["audio"](x["audio"])))


def test_gated_three_modalities_softmax_gates():
    dims = {"a": 3, "b": 4, "c": 2}
    f = GatedFusion(dims, out_dim=6)
    x = {m: torch.randn(5, d) for m, d in dims.items()}
    out = f(x)
    g = f.last_gates
    assert out.shape == (5, 6) and g.shape == (5, 3, 6)
    close(g.sum(dim=1), torch.ones(5, 6))
    h = torch.stack([torch.tanh(f.proj[m](x[m])) for m in "abc"], dim=1)
    close(out, (g * h).sum(1))


# --------------------------------------------------------------------------- late fusion


def test_late_mean_hand_case():
    f = LateFusion(["image", "audio"], "mean", n_classes=2)
    x = {"audio": torch.tensor([[0.0, 0.0]]), "image": torch.tensor([[math.log(3.0), 0.0]])}
    # softmax: audio [0.5, 0.5], image [0.75, 0.25] -> mean [0.625, 0.375]
    close(f(x).exp(), torch.tensor([[0.625, 0.375]]))
    y = {m: torch.randn(4, 5) for m in ("audio", "image")}
    close(LateFusion(["audio", "image"])(y).exp(), (y["audio"].softmax(-1) + y["image"].softmax(-1)) / 2)


def test_late_vote_majority_and_tie_break():
    f = LateFusion(["a", "b", "c"], "vote", n_classes=3)
    x = {
        "a": torch.tensor([[5.0, 0.0, 0.0], [0.0, 3.0, 0.0]]),
        "b": torch.tensor([[0.0, 0.0, 9.0], [0.0, 0.0, 1.0]]),
        "c": torch.tensor([[4.0, 0.0, 0.0], [0.0, 0.0, 0.5]]),
    }
    out = f(x)
    assert out.argmax(-1).tolist() == [0, 2]  # two of three agree
    close(out.exp(), torch.tensor([[2 / 3, 0.0, 1 / 3], [0.0, 1 / 3, 2 / 3]]), atol=1e-5)
    # 1 vote each for classes 0 and 1: the larger summed probability (class 1) wins
    g = LateFusion(["a", "b"], "vote")
    assert g({"a": torch.tensor([[2.0, 0.0]]), "b": torch.tensor([[0.0, 3.0]])}).argmax(-1).item() == 1


def test_late_learned_weights():
    f = LateFusion(["b", "a"], "learned", n_classes=4)
    close(f.weights().sum(), torch.tensor(1.0))
    with torch.no_grad():
        f.logits.copy_(torch.tensor([20.0, -20.0]))  # all weight on "a"
    x = {"a": torch.randn(3, 4), "b": torch.randn(3, 4)}
    close(f(x), F.log_softmax(x["a"], -1), atol=1e-5)


def test_late_class_count_mismatch_raises():
    with pytest.raises(ModalityError, match="'image' has 3 classes"):
        LateFusion(["audio", "image"])({"audio": torch.randn(2, 4), "image": torch.randn(2, 3)})


# --------------------------------------------------------------------------- token fusions


def test_cross_attention_maps():
    f = make("cross_attention")
    out = f(inputs_for("cross_attention"))
    assert out.shape == (B, 2 * D_MODEL)
    maps = f.last_attention
    assert set(maps) == {"audio->image", "image->audio"}
    assert maps["audio->image"].shape == (B, TOKENS["audio"], TOKENS["image"])
    assert maps["image->audio"].shape == (B, TOKENS["image"], TOKENS["audio"])
    for w in maps.values():
        close(w.sum(-1), torch.ones(w.shape[:-1]))
        assert not w.requires_grad


def test_cross_attention_needs_two_modalities():
    with pytest.raises(ValueError, match="exactly two"):
        CrossModalAttentionFusion({"a": 2, "b": 2, "c": 2}, d_model=8)


@pytest.mark.parametrize("cls", [CrossModalAttentionFusion, TransformerFusion])
def test_zero_padding_changes_nothing_when_masked(cls):
    """With mask_zero_tokens, padding a sequence with zero tokens leaves the output as it was (without, it does not)."""
    torch.manual_seed(0)
    a, b = torch.randn(3, 5, 6), torch.randn(3, 4, 8)
    padded = {"a": torch.cat([a, torch.zeros(3, 7, 6)], 1), "b": torch.cat([b, torch.zeros(3, 2, 8)], 1)}
    f = cls({"a": 6, "b": 8}, d_model=16, mask_zero_tokens=True).eval()
    close(f(padded), f({"a": a, "b": b}))
    g = cls({"a": 6, "b": 8}, d_model=16).eval()
    g.load_state_dict(f.state_dict())
    assert not torch.allclose(g(padded), g({"a": a, "b": b}), atol=1e-4)


def test_cross_attention_masks_padding_per_sample():
    """Two samples of different lengths in one zero-padded batch each get what they get alone."""
    torch.manual_seed(1)
    f = CrossModalAttentionFusion({"words": 6, "frames": 4}, d_model=16, mask_zero_tokens=True).eval()
    short = {"words": torch.randn(1, 2, 6), "frames": torch.randn(1, 3, 4)}
    long = {"words": torch.randn(1, 5, 6), "frames": torch.randn(1, 9, 4)}
    batch = {m: torch.cat([F.pad(short[m], (0, 0, 0, long[m].shape[1] - short[m].shape[1])), long[m]])
             for m in short}  # fmt: skip
    out = f(batch)
    assert f.last_attention["words->frames"][0, :, 3:].abs().max() == 0  # no weight on the padded frames
    close(out[:1], f(short))
    close(out[1:], f(long))


def test_cross_attention_with_a_dropped_modality_is_finite():
    """A sample whose tokens are all zeros (a dropped modality) gives a finite output, not NaN."""
    f = CrossModalAttentionFusion({"a": 6, "b": 8}, d_model=16, mask_zero_tokens=True).eval()
    out = f({"a": torch.randn(2, 5, 6), "b": torch.cat([torch.zeros(1, 4, 8), torch.randn(1, 4, 8)])})
    assert torch.isfinite(out).all()


def test_token_fusions_accept_vectors():
    x = inputs_for("concat")  # (B, d_m): one token per modality
    assert make("cross_attention")(x).shape == (B, 2 * D_MODEL)
    assert make("transformer")(x).shape == (B, D_MODEL)


def test_transformer_positions_matter():
    f = make("transformer").eval()
    x = inputs_for("transformer")
    perm = torch.tensor([6, 0, 5, 1, 4, 2, 3])
    y = x | {"audio": x["audio"][:, perm]}
    assert not torch.allclose(f(x), f(y), atol=1e-4)


def test_transformer_batch_independence():
    f = make("transformer").eval()
    x = inputs_for("transformer", batch=5)
    full = f(x)
    for b in range(5):
        close(f({m: t[b : b + 1] for m, t in x.items()}), full[b : b + 1])


def test_transformer_max_len():
    f = TransformerFusion(DIMS, d_model=8, n_layers=1, max_len=4)
    with pytest.raises(ModalityError, match="'audio' has 7 tokens"):
        f(inputs_for("transformer"))


PARAMETER_FREE = ("concat", "late_mean", "late_vote")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float16], ids=["float64", "float16"])
@pytest.mark.parametrize("name", ALL)
def test_other_float_dtypes_are_cast_to_the_parameters(name, dtype):
    f = make(name).eval()
    x = {m: t.to(dtype) for m, t in inputs_for(name).items()}
    out = f(x)
    same_values = f({m: t.float() for m, t in x.items()})
    if name in PARAMETER_FREE:  # nothing to cast to: computed in the input dtype
        assert out.dtype == dtype
        tol = 1e-2 if dtype == torch.float16 else 1e-6
        torch.testing.assert_close(out.float(), same_values, atol=tol, rtol=tol)
    else:
        assert out.dtype == torch.float32
        torch.testing.assert_close(out, same_values, atol=0, rtol=0)
    mixed = {"audio": x["audio"], "image": x["image"].float()}  # one modality float32, the other not
    assert torch.isfinite(f(mixed)).all()


@pytest.mark.parametrize("name", ALL)
def test_classifier_on_float64_features(name):
    """Precomputed float64 (NumPy) features through identity encoders, as av_recipe does, reach the head."""
    fusion = make(name)
    model = MultimodalClassifier({m: nn.Identity() for m in DIMS}, fusion, N_CLASSES).eval()
    x = {m: t.double() for m, t in inputs_for(name).items()}
    out = model(x)
    no_parameters_at_all = name in ("late_mean", "late_vote")  # and no head: float64 all the way
    assert out.shape == (B, N_CLASSES) and out.dtype == (torch.float64 if no_parameters_at_all else torch.float32)


@pytest.mark.parametrize("dtype", [torch.int64, torch.bool])
@pytest.mark.parametrize("name", ALL)
def test_integer_and_bool_inputs_raise_type_error(name, dtype):
    x = inputs_for(name)
    x["image"] = (x["image"] > 0).to(dtype)
    with pytest.raises(TypeError, match=rf"modality 'image' has dtype {dtype}, expected a floating-point tensor"):
        make(name)(x)


def test_non_tensor_input_raises_type_error():
    x = {m: t.numpy() for m, t in inputs_for("concat").items()}
    with pytest.raises(TypeError, match="modality 'audio' is a ndarray, expected a torch.Tensor"):
        make("concat")(x)


# --------------------------------------------------------------------------- classifier


def _xor_data(n: int = 512) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Label = sign(audio[0]) XOR sign(image[0]): neither modality alone says anything about it."""
    g = torch.Generator().manual_seed(1)
    a, i = torch.randn(n, 2, generator=g), torch.randn(n, 2, generator=g)
    return {"audio": a, "image": i}, ((a[:, 0] > 0) ^ (i[:, 0] > 0)).long()


def _train_accuracy(model: nn.Module, x: dict[str, torch.Tensor], y: torch.Tensor, steps: int = 300) -> float:
    """Full-batch Adam for ``steps`` steps; return train accuracy."""
    opt = torch.optim.Adam(model.parameters(), lr=2e-2)
    model.train()
    for _ in range(steps):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        return (model(x).argmax(-1) == y).float().mean().item()


def test_classifier_learns_xor_only_with_both_modalities():
    x, y = _xor_data()
    enc = {"image": nn.Linear(2, 16), "audio": nn.Linear(2, 16)}
    both = MultimodalClassifier(
        enc, build_fusion("concat", {"audio": 16, "image": 16}, 2), 2, dropout=0.0, hidden_dim=32
    )
    assert list(both.encoders) == ["audio", "image"]
    assert _train_accuracy(both, x, y) > 0.95
    one = MultimodalClassifier({"audio": nn.Linear(2, 16)}, ConcatFusion({"audio": 16}), 2, dropout=0.0, hidden_dim=32)
    assert _train_accuracy(one, {"audio": x["audio"]}, y) < 0.75


def test_linear_head_on_concat_is_additive_but_tensor_fusion_is_not():
    # concat + Linear head = f(audio) + g(image): it gets at most 3 of the 4 XOR quadrants right;
    # the outer product holds audio * image terms, so tensor fusion solves it with a Linear head
    x, y = _xor_data()
    enc = {"audio": nn.Linear(2, 4), "image": nn.Linear(2, 4)}
    concat = MultimodalClassifier(enc, ConcatFusion({"audio": 4, "image": 4}), 2, dropout=0.0)
    assert _train_accuracy(concat, x, y, steps=200) < 0.8
    enc = {"audio": nn.Linear(2, 4), "image": nn.Linear(2, 4)}
    tensor = MultimodalClassifier(enc, TensorFusion({"audio": 4, "image": 4}, 16), 2, dropout=0.0)
    assert _train_accuracy(tensor, x, y, steps=200) > 0.95


def test_modality_dropout_train_only():
    enc = {"audio": nn.Linear(3, 8), "image": nn.Linear(3, 8)}
    model = MultimodalClassifier(enc, ConcatFusion({"audio": 8, "image": 8}), 2, modality_dropout=0.5)
    seen: list[dict[str, torch.Tensor]] = []
    model.fusion.register_forward_pre_hook(lambda mod, args: seen.append({m: t.detach() for m, t in args[0].items()}))
    x = {"audio": torch.randn(400, 3), "image": torch.randn(400, 3)}
    model.train()
    model(x)
    zeroed = torch.stack([(seen[-1][m] == 0).all(-1) for m in ("audio", "image")], dim=1)  # (B, 2)
    assert 0.35 < zeroed.any(1).float().mean().item() < 0.65  # about p of the samples lose one modality
    assert zeroed[:, 0].any() and zeroed[:, 1].any()
    assert not zeroed.all(1).any()  # never all of them
    model.eval()
    model(x)
    assert not any((seen[-1][m] == 0).all(-1).any() for m in ("audio", "image"))


def test_drop_random_modality_single_modality_is_noop():
    t = torch.randn(10, 4)
    assert drop_random_modality({"a": t}, 0.9)["a"] is t


def test_classifier_with_late_fusion_has_no_head():
    enc = {"audio": nn.Linear(3, 5), "image": nn.Linear(4, 5)}
    fusion = build_fusion("late_mean", {"audio": 5, "image": 5}, 5)
    model = MultimodalClassifier(enc, fusion, 5).eval()
    x = {"audio": torch.randn(2, 3), "image": torch.randn(2, 4)}
    assert isinstance(model.head, nn.Identity)
    close(model(x), fusion({m: enc[m](x[m]) for m in enc}))


def test_classifier_rejects_mismatched_modalities():
    with pytest.raises(ValueError, match="differ"):
        MultimodalClassifier({"audio": nn.Linear(2, 4)}, ConcatFusion({"audio": 4, "image": 4}), 2)
