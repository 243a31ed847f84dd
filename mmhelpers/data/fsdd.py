"""Free Spoken Digit Dataset: 3,000 recordings of digits by 6 speakers at 8 kHz."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmhelpers.audio import load_audio
from mmhelpers.data.fetch import fetch
from mmhelpers.data.registry import get_dataset

FSDD_SR = 8000
FSDD_SPEAKERS = ("george", "jackson", "lucas", "nicolas", "theo", "yweweler")


@dataclass
class SpokenDigits:
    """Variable-length waveforms with digit, speaker and repetition index per clip."""

    waves: list[torch.Tensor]
    sr: int
    digits: np.ndarray
    speakers: np.ndarray
    indices: np.ndarray
    source: str
    paths: list[Path] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.waves)

    def official_test_mask(self) -> np.ndarray:
        """FSDD's official split: repetition index 0-4 is test, 5-49 train."""
        return self.indices < 5

    def subset(self, mask: np.ndarray) -> SpokenDigits:
        """The clips where ``mask`` is True (a boolean array or integer indices)."""
        idx = np.flatnonzero(mask) if np.asarray(mask).dtype == bool else np.asarray(mask)
        return SpokenDigits(
            waves=[self.waves[i] for i in idx],
            sr=self.sr,
            digits=self.digits[idx],
            speakers=self.speakers[idx],
            indices=self.indices[idx],
            source=self.source,
            paths=[self.paths[i] for i in idx] if self.paths else [],
        )


def parse_fsdd_name(name: str) -> tuple[int, str, int]:
    """``7_jackson_32.wav`` -> (7, "jackson", 32)."""
    stem = Path(name).stem
    digit, speaker, index = stem.split("_")
    return int(digit), speaker, int(index)


def load_fsdd(progress: bool = True) -> SpokenDigits:
    """All 3,000 FSDD recordings, read with soundfile; every file must be 8 kHz."""
    folder = fetch("fsdd", progress=progress)
    specs = sorted(get_dataset("fsdd").files, key=lambda s: s.path)
    waves, digits, speakers, indices, paths = [], [], [], [], []
    for spec in tqdm(specs, desc="fsdd: read", unit="clip", disable=not progress):
        path = folder / spec.path
        wave, _ = load_audio(path, expect_sr=FSDD_SR)
        d, s, i = parse_fsdd_name(path.name)
        waves.append(wave)
        digits.append(d)
        speakers.append(s)
        indices.append(i)
        paths.append(path)
    return SpokenDigits(
        waves, FSDD_SR, np.array(digits), np.array(speakers), np.array(indices), "FSDD (registry: fsdd)", paths
    )
