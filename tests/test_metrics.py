"""Tests for mmhelpers.metrics: hand-computed accuracy, macro-F1, confusion, ECE and reliability values, and the plots."""

from __future__ import annotations

from collections.abc import Iterator

import matplotlib
import numpy as np
import pytest
import torch

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mmhelpers.metrics import (  # noqa: E402
    accuracy,
    accuracy_coverage,
    confusion,
    coverage_at_accuracy,
    expected_calibration_error,
    fit_temperature,
    macro_f1,
    plot_confusion,
    plot_history,
    plot_reliability,
    reliability_curve,
)
from mmhelpers.train import History  # noqa: E402

# Six examples, three classes: the hand case for accuracy, macro-F1 and the confusion matrix.
LABELS = [0, 0, 1, 1, 2, 2]
PREDS = [0, 1, 1, 1, 2, 0]

# ECE hand case, 5 bins (0,.2] (.2,.4] (.4,.6] (.6,.8] (.8,1]:
#   conf .90 right, conf .85 wrong -> bin (.8,1]: acc 1/2, mean conf .875, gap .375
#   conf .70 right, conf .65 right -> bin (.6,.8]: acc 1,   mean conf .675, gap .325
#   ECE = 2/4 * .375 + 2/4 * .325 = .35
HAND_PROBS = [[0.90, 0.10], [0.85, 0.15], [0.30, 0.70], [0.35, 0.65]]
HAND_LABELS = [0, 1, 1, 1]


@pytest.fixture(autouse=True)
def _close_figures() -> Iterator[None]:
    yield
    plt.close("all")


def test_accuracy_from_ids_and_from_scores() -> None:
    assert accuracy(PREDS, LABELS) == pytest.approx(4 / 6)
    assert accuracy(torch.tensor(PREDS), np.array(LABELS)) == pytest.approx(4 / 6)
    logits = torch.nn.functional.one_hot(torch.tensor(PREDS), 3).float() * 5 - 1  # argmax = PREDS
    assert accuracy(logits.to(torch.bfloat16), torch.tensor(LABELS)) == pytest.approx(4 / 6)


def test_macro_f1_hand_case() -> None:
    # class 0: TP 1, FP 1, FN 1 -> F1 1/2; class 1: TP 2, FP 1, FN 0 -> P 2/3, R 1, F1 4/5;
    # class 2: TP 1, FP 0, FN 1 -> P 1, R 1/2, F1 2/3.  Macro = (1/2 + 4/5 + 2/3) / 3 = 59/90.
    assert macro_f1(PREDS, LABELS) == pytest.approx(59 / 90)
    assert macro_f1(torch.tensor(PREDS), torch.tensor(LABELS)) == pytest.approx(59 / 90)
    # a fourth class that never occurs counts as F1 0 when the class range is given
    assert macro_f1(PREDS, LABELS, n_classes=4) == pytest.approx(59 / 90 * 3 / 4)


def test_confusion_values() -> None:
    cm = confusion(torch.tensor(PREDS), np.array(LABELS), n_classes=4)
    expected = [[1, 1, 0, 0], [0, 2, 0, 0], [1, 0, 1, 0], [0, 0, 0, 0]]  # rows true, columns predicted
    np.testing.assert_array_equal(cm, expected)


def test_ece_and_reliability_hand_case() -> None:
    assert expected_calibration_error(HAND_PROBS, HAND_LABELS, n_bins=5) == pytest.approx(0.35)
    assert expected_calibration_error(torch.tensor(HAND_PROBS), torch.tensor(HAND_LABELS), 5) == pytest.approx(0.35)
    curve = reliability_curve(np.array(HAND_PROBS), HAND_LABELS, n_bins=5)
    np.testing.assert_allclose(curve["bin_centers"], [0.1, 0.3, 0.5, 0.7, 0.9])
    np.testing.assert_array_equal(curve["count"], [0, 0, 0, 2, 2])
    np.testing.assert_allclose(curve["accuracy"][3:], [1.0, 0.5])
    np.testing.assert_allclose(curve["confidence"][3:], [0.675, 0.875])
    assert np.isnan(curve["accuracy"][:3]).all() and np.isnan(curve["confidence"][:3]).all()


def test_ece_perfect_prediction_is_zero_and_1d_probs_rejected() -> None:
    assert expected_calibration_error([[1.0, 0.0], [0.0, 1.0]], [0, 1]) == 0.0
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        expected_calibration_error([0.2, 0.9], [0, 1])


def _binary_sample(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Probabilities [1-p, p] with p ~ U(0, 1) and labels drawn with exactly that probability."""
    rng = np.random.default_rng(seed)
    p = rng.uniform(0, 1, n)
    labels = (rng.uniform(0, 1, n) < p).astype(int)
    return np.stack([1 - p, p], axis=1), labels


def test_ece_calibrated_vs_overconfident() -> None:
    probs, labels = _binary_sample(20_000, seed=0)
    assert expected_calibration_error(probs, labels) < 0.02
    # same predictions, confidence pushed to 0.99: accuracy stays ~0.75, so ECE ~0.24
    top = probs.argmax(axis=1)
    over = np.full_like(probs, 0.01)
    over[np.arange(len(top)), top] = 0.99
    assert accuracy(over, labels) == accuracy(probs, labels)
    assert expected_calibration_error(over, labels) > 0.2
    curve = reliability_curve(torch.from_numpy(over), torch.from_numpy(labels))
    assert curve["count"].sum() == len(labels) and curve["count"][-1] == len(labels)


def test_reliability_counts_sum_to_n_with_many_classes() -> None:
    gen = torch.Generator().manual_seed(0)
    probs = torch.softmax(torch.randn(1000, 7, generator=gen) * 3, dim=1)
    labels = torch.randint(0, 7, (1000,), generator=gen)
    curve = reliability_curve(probs, labels, n_bins=10)
    assert curve["count"].sum() == 1000 and len(curve["bin_centers"]) == 10
    full = curve["count"] > 0
    lo, hi = curve["bin_centers"][full] - 0.05, curve["bin_centers"][full] + 0.05
    assert np.all((curve["confidence"][full] > lo) & (curve["confidence"][full] <= hi + 1e-12))  # mean conf in bin


def test_plot_confusion_normalised_and_counts() -> None:
    cm = confusion(PREDS, LABELS, n_classes=4)  # last row is empty
    ax = plot_confusion(cm, ["a", "b", "c", "d"])
    image = np.asarray(ax.images[0].get_array())
    expected = [[0.5, 0.5, 0, 0], [0, 1, 0, 0], [0.5, 0, 0.5, 0], [0, 0, 0, 0]]
    np.testing.assert_allclose(image, expected)
    assert len(ax.texts) == 16 and ax.texts[0].get_text() == "0.50"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b", "c", "d"]
    _, ax2 = plt.subplots()
    assert plot_confusion(cm, None, ax=ax2, normalize=False) is ax2
    np.testing.assert_array_equal(np.asarray(ax2.images[0].get_array()), cm)
    assert ax2.texts[4].get_text() == "0" and ax2.texts[5].get_text() == "2"


def test_plot_reliability_bars_and_title() -> None:
    curve = reliability_curve(HAND_PROBS, HAND_LABELS, n_bins=5)
    ax = plot_reliability(curve)
    heights = [p.get_height() for p in ax.patches]
    assert heights == pytest.approx([1.0, 0.5])  # one bar per non-empty bin
    assert "ECE = 0.350" in ax.get_title()


def test_plot_history_from_history_and_dict() -> None:
    h = History(
        train_loss=[1.0, 0.5, 0.3], train_acc=[0.4, 0.7, 0.9], val_loss=[1.1, 0.6, 0.7], val_acc=[0.3, 0.8, 0.7]
    )
    h.best_epoch = 1
    loss_ax, acc_ax = plot_history(h)
    assert [line.get_label() for line in loss_ax.get_lines()] == ["train loss", "val loss"]
    np.testing.assert_allclose(loss_ax.get_lines()[1].get_ydata(), [1.1, 0.6, 0.7])
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_xdata(), [1, 2, 3])
    np.testing.assert_allclose(acc_ax.get_lines()[0].get_ydata(), [0.4, 0.7, 0.9])
    # a dict without validation curves, drawn on one Axes (accuracy on its twin)
    _, ax = plt.subplots()
    left, right = plot_history({"train_loss": [2.0, 1.0], "train_acc": [0.5, 0.6], "val_loss": []}, ax=ax)
    assert left is ax and right is not ax
    assert len(left.get_lines()) == 1 and len(right.get_lines()) == 1


def test_accuracy_coverage_hand_case() -> None:
    # confidences .9 (right) .8 (right) .7 (wrong) .6 (right): answering the surest k
    probs = [[0.9, 0.1], [0.2, 0.8], [0.7, 0.3], [0.4, 0.6]]
    labels = [0, 1, 1, 1]
    curve = accuracy_coverage(probs, labels)
    assert np.allclose(curve["coverage"], [0.25, 0.5, 0.75, 1.0])
    assert np.allclose(curve["accuracy"], [1.0, 1.0, 2 / 3, 0.75])
    assert np.allclose(curve["threshold"], [0.9, 0.8, 0.7, 0.6])
    at = coverage_at_accuracy(probs, labels, 0.99)
    assert at == {"coverage": 0.5, "threshold": 0.8, "accuracy": 1.0}
    assert coverage_at_accuracy(probs, labels, 0.7)["coverage"] == 1.0  # 0.75 overall
    never = coverage_at_accuracy([[0.9, 0.1]], [1], 0.99)
    assert never["coverage"] == 0.0 and never["threshold"] == 1.0


def test_fit_temperature_undoes_a_known_scaling() -> None:
    gen = torch.Generator().manual_seed(0)
    calibrated = torch.randn(4000, 5, generator=gen)
    # sample labels from softmax(calibrated): these logits are calibrated by construction
    labels = torch.multinomial(calibrated.softmax(1), 1, generator=gen)[:, 0]
    t = fit_temperature(calibrated * 3.0, labels)  # overconfident by 3x
    assert t == pytest.approx(3.0, rel=0.1)
    scaled = (calibrated * 3.0 / t).softmax(1)
    assert expected_calibration_error(scaled, labels) < expected_calibration_error(
        (calibrated * 3.0).softmax(1), labels
    )
