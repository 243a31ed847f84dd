"""Train/test splits that keep what must stay apart apart: classes balanced, groups (speakers, voices) held out.

Each function returns sorted index arrays. ``group_holdout`` and ``leave_one_group_out`` are the
speaker-independent protocols: no group (a speaker, a voice, a patient) has examples on both sides.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from sklearn.model_selection import LeaveOneGroupOut


def _as_numpy(x: torch.Tensor | np.ndarray | Sequence[object]) -> np.ndarray:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def stratified_holdout(indices: np.ndarray, labels: torch.Tensor | np.ndarray, fraction: float = 0.2,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Split ``indices`` into (kept, held out), holding out ``fraction`` of each class (by ``labels[indices]``).

    Used, for example, to keep a part of the training set for a fusion head that the encoders never saw.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    indices = np.asarray(indices)
    rng = np.random.default_rng(seed)
    kept, held = [], []
    y = _as_numpy(labels)[indices]
    for c in np.unique(y):
        idx = rng.permutation(indices[y == c])
        k = int(round(len(idx) * fraction))
        held.append(idx[:k])
        kept.append(idx[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(held))


def group_holdout(
    groups: Sequence[object] | np.ndarray, test_groups: Sequence[object]
) -> tuple[np.ndarray, np.ndarray]:
    """(train, test) indices: every example of a group in ``test_groups`` is test, all others train."""
    groups = _as_numpy(groups)
    unknown = sorted(set(map(str, test_groups)) - set(map(str, groups)))
    if unknown:
        raise ValueError(f"test groups {unknown} do not occur; the groups are {sorted(set(map(str, groups)))}")
    test = np.isin(groups.astype(str), [str(g) for g in test_groups])
    return np.flatnonzero(~test), np.flatnonzero(test)


def leave_one_group_out(groups: Sequence[object] | np.ndarray) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """One (group name, train, test) fold per group, in sorted group order (scikit-learn's ``LeaveOneGroupOut``)."""
    groups = _as_numpy(groups).astype(str)
    if len(set(groups)) < 2:
        raise ValueError(f"leave-one-group-out needs at least 2 groups, got {sorted(set(groups))}")
    folds = []
    for train, test in LeaveOneGroupOut().split(groups, groups=groups):
        folds.append((str(groups[test[0]]), np.sort(train), np.sort(test)))
    return folds
