"""Splits: classes balanced on both sides, groups never on both sides."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from mmhelpers.splits import group_holdout, leave_one_group_out, stratified_holdout


def test_stratified_holdout_keeps_class_proportions_and_is_seeded() -> None:
    labels = torch.tensor([0] * 50 + [1] * 30 + [2] * 20)
    kept, held = stratified_holdout(np.arange(100), labels, 0.2, seed=3)
    assert sorted(np.concatenate([kept, held]).tolist()) == list(range(100))
    assert np.bincount(labels[held].numpy()).tolist() == [10, 6, 4]
    again, _ = stratified_holdout(np.arange(100), labels, 0.2, seed=3)
    other, _ = stratified_holdout(np.arange(100), labels, 0.2, seed=4)
    assert np.array_equal(kept, again) and not np.array_equal(kept, other)
    sub_kept, sub_held = stratified_holdout(np.arange(0, 100, 2), labels, 0.5)
    assert set(sub_kept) | set(sub_held) == set(range(0, 100, 2))
    with pytest.raises(ValueError, match="fraction"):
        stratified_holdout(np.arange(10), labels[:10], 1.0)


def test_group_holdout_and_leave_one_group_out_never_mix_groups() -> None:
    voices = np.array(["ann", "bob", "cat", "ann", "bob", "cat", "dan"])
    train, test = group_holdout(voices, ["cat"])
    assert test.tolist() == [2, 5] and set(voices[train]) == {"ann", "bob", "dan"}
    with pytest.raises(ValueError, match="eve"):
        group_holdout(voices, ["eve"])
    folds = leave_one_group_out(voices)
    assert [name for name, _, _ in folds] == ["ann", "bob", "cat", "dan"]
    for name, tr, te in folds:
        assert set(voices[te]) == {name} and name not in set(voices[tr]) and len(tr) + len(te) == 7
    with pytest.raises(ValueError, match="at least 2 groups"):
        leave_one_group_out(["a", "a"])
