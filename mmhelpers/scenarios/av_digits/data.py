"""Audio-visual digits (AV-MNIST style): each spoken digit is paired with a handwritten image of the same digit.

Audio: the Free Spoken Digit Dataset (3,000 clips, 6 speakers) or, with no mirror, generated speech-like
clips. Images: the MNIST test set (10,000) or scikit-learn's digits. Images are split once into a
training pool and a test pool (seeded, stratified), so no test image is ever seen in training; training
clips can be re-paired with a fresh image of their digit every epoch (``pair_images``), test clips keep
one fixed pairing.

Protocols (``protocol_folds``):

* ``official``: FSDD's own split, recording index 0-4 test, 5-49 train.
* ``speaker``: leave-one-speaker-out, one fold per speaker (speaker-independent).
* ``hard``: the official split with both modalities degraded (``degrade_images``, ``degrade_audio``)
  so that neither alone is enough; the protocol on which fusion has to earn its keep.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from mmhelpers import audio as au
from mmhelpers.errors import DataError
from mmhelpers.splits import stratified_holdout

AUDIO_SR = 8000
AUDIO_SECONDS = 0.8  # clips are centred in a 0.8 s window; the 2.5% that are longer are centre-cropped
N_MELS = 40
WINDOW_MS, HOP_MS = 25, 10  # at any sample rate; 200 / 80 samples at 8 kHz -> 81 frames in 0.8 s
N_FFT, HOP = AUDIO_SR * WINDOW_MS // 1000, AUDIO_SR * HOP_MS // 1000  # at AUDIO_SR


@dataclass
class AVDigits:
    """Spoken-digit clips, a pool of digit images, and everything needed to pair and split them."""

    waves: torch.Tensor  # (N, samples) float32 at ``sr`` Hz, each clip centred in the window
    audio: torch.Tensor  # (N, N_MELS, frames) log-mel, normalised per clip (CMVN)
    labels: torch.Tensor  # (N,) class id of each clip (an index into ``classes``)
    speakers: np.ndarray  # (N,) speaker name of each clip
    test_mask: np.ndarray  # (N,) bool: the clips of the official test split
    images: torch.Tensor  # (M, C, H, W) float in [0, 1]
    image_labels: torch.Tensor  # (M,) class id of each image
    image_pools: dict[str, np.ndarray] = field(default_factory=dict)  # "train" / "test" -> image indices
    source: str = ""
    sr: int = AUDIO_SR
    classes: list[str] = field(default_factory=lambda: [str(d) for d in range(10)])  # class names, by id

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def speaker_names(self) -> list[str]:
        return sorted(set(self.speakers.tolist()))


def audio_features(waves: torch.Tensor, sr: int = AUDIO_SR) -> torch.Tensor:
    """(N, samples) at ``sr`` Hz -> (N, N_MELS, frames): log-mel with 25 ms windows and a 10 ms hop at any
    sample rate, then per-clip mean/variance normalisation (CMVN).

    CMVN removes each recording's loudness and overall level, which differ more between speakers
    and microphones than between digits.
    """
    n_fft, hop = round(sr * WINDOW_MS / 1000), round(sr * HOP_MS / 1000)
    mel = au.log_mel_spectrogram(waves, sr, n_fft=n_fft, hop_length=hop, n_mels=N_MELS)
    return au.cmvn(mel)


def _image_pools(labels: np.ndarray, test_fraction: float, seed: int) -> dict[str, np.ndarray]:
    """Stratified split of the image indices into a training pool and a test pool."""
    train, test = stratified_holdout(np.arange(len(labels)), labels, test_fraction, seed)
    return {"train": train, "test": test}


def load_av_digits(data: str | Path = "real", seed: int = 0, test_image_fraction: float = 0.2) -> AVDigits:
    """FSDD + MNIST (``data="real"``, from the registry and mirror), generated clips + scikit-learn digits
    (``data="embedded"``, no download), or your own folder (a path: see ``load_av_folder``)."""
    from mmhelpers.data import load_digit_images, load_fsdd, load_mnist, load_synthetic_spoken_digits

    if str(data) not in ("real", "embedded"):
        if not Path(data).expanduser().is_dir():
            raise ValueError(f"data must be 'real', 'embedded' or a folder; {str(data)!r} is not a folder")
        return load_av_folder(Path(data).expanduser(), seed=seed, test_image_fraction=test_image_fraction)
    if data == "real":
        speech, digits = load_fsdd(progress=False), load_mnist()
    elif data == "embedded":
        speech, digits = (
            load_synthetic_spoken_digits(n_per_digit_speaker=25, n_speakers=4, seed=seed),
            load_digit_images(),
        )
    else:
        raise ValueError(f"data must be 'real' or 'embedded', got {data!r}")
    if speech.sr != AUDIO_SR:
        raise ValueError(f"{speech.source}: expected {AUDIO_SR} Hz audio, got {speech.sr} Hz")
    n = int(AUDIO_SECONDS * AUDIO_SR)
    waves = torch.stack([au.centre_window(w, n) for w in speech.waves])
    images = torch.from_numpy(digits.images).float().div(255.0).unsqueeze(1)
    return AVDigits(
        waves=waves,
        audio=audio_features(waves),
        labels=torch.from_numpy(speech.digits).long(),
        speakers=np.asarray(speech.speakers),
        test_mask=np.asarray(speech.indices) < 5,  # FSDD's own split: recordings 0-4 of each are test
        images=images,
        image_labels=torch.from_numpy(digits.labels).long(),
        image_pools=_image_pools(digits.labels, test_image_fraction, seed),
        source=f"audio: {speech.source}; images: {digits.source}",
    )


def load_av_folder(folder: str | Path, seed: int = 0, test_image_fraction: float = 0.2, test_fraction: float = 0.2,
                   sr: int = 16000, seconds: float = 1.0, image_size: int = 28, image_channels: int = 1,
                   label_column: str = "label", speaker_column: str = "speaker",
                   split_column: str = "split") -> AVDigits:  # fmt: skip
    """Your own audio-visual classes: ``folder/audio/`` and ``folder/images/``, paired by class name.

    Each subfolder is an audiofolder / imagefolder (a ``metadata.csv`` with ``file_name`` and ``label``
    columns) or has one subfolder per class, as torchvision's ImageFolder. Both must hold the same classes,
    any number of them. Audio at any sample rate is resampled to ``sr`` and centred in a ``seconds`` window
    (log-mel windows stay 25 ms / 10 ms); images of any size and channel count become ``image_channels`` x
    ``image_size`` x ``image_size``. Optional audio metadata columns: ``speaker`` (enables the
    leave-one-speaker-out protocol) and ``split`` ("train"/"test": the official split; without it a seeded,
    class-stratified ``test_fraction`` of the clips is the test set).
    """
    from mmhelpers.data.folders import load_clips, load_images, read_folder

    folder = Path(folder)
    sounds = read_folder(folder / "audio", label_column=label_column, kind="audio")
    pictures = read_folder(folder / "images", label_column=label_column, kind="image")
    audio_names, image_names = sorted(set(sounds.column(label_column))), sorted(set(pictures.column(label_column)))
    if audio_names != image_names:
        only_audio, only_images = (
            sorted(set(audio_names) - set(image_names)),
            sorted(set(image_names) - set(audio_names)),
        )
        raise DataError(folder, f"audio/ and images/ must hold the same classes; only in audio/: {only_audio}, "
                                f"only in images/: {only_images}")  # fmt: skip
    labels, classes = sounds.labels(label_column)
    image_labels, _ = pictures.labels(label_column)  # same names, hence the same ids
    speakers = np.asarray(sounds.column(speaker_column) if speaker_column in sounds.columns else ["all"] * len(sounds))
    if split_column in sounds.columns:
        split = np.asarray(sounds.column(split_column))
        bad = sorted(set(split) - {"train", "test"})
        if bad:
            raise DataError(sounds.source, f"column {split_column!r} may hold only 'train' or 'test', found {bad}")
        test_mask = split == "test"
    else:
        test_mask = np.zeros(len(sounds), dtype=bool)
        test_mask[stratified_holdout(np.arange(len(sounds)), labels, test_fraction, seed)[1]] = True
    waves = load_clips(sounds.paths(), sr, seconds)
    images = load_images(pictures.paths(), image_size, image_channels)
    return AVDigits(
        waves=waves, audio=audio_features(waves, sr), labels=labels, speakers=speakers, test_mask=test_mask,
        images=images, image_labels=image_labels,
        image_pools=_image_pools(image_labels.numpy(), test_image_fraction, seed),
        source=f"your folder {folder}: {len(sounds)} clips and {len(pictures)} images of {len(classes)} classes",
        sr=sr, classes=classes,
    )  # fmt: skip


def pair_images(
    labels: torch.Tensor, image_labels: torch.Tensor, pool: np.ndarray, generator: torch.Generator
) -> torch.Tensor:
    """For each label, the index of a random image of the same class from ``pool`` (with replacement)."""
    pool_t = torch.as_tensor(pool)
    out = torch.empty(len(labels), dtype=torch.long)
    for c in labels.unique().tolist():
        where = (labels == c).nonzero().squeeze(1)
        candidates = pool_t[image_labels[pool_t] == c]
        if len(candidates) == 0:
            raise ValueError(f"the image pool has no image of class {c}")
        pick = torch.randint(len(candidates), (len(where),), generator=generator)
        out[where] = candidates[pick]
    return out


@dataclass
class Fold:
    """One train/test split of the clips (indices into AVDigits)."""

    name: str
    train: np.ndarray
    test: np.ndarray


def protocol_folds(av: AVDigits, protocol: str) -> list[Fold]:
    """The folds of a protocol: ``official`` and ``hard`` (one fold) or ``speaker`` (one per speaker)."""
    if protocol in ("official", "hard"):
        return [Fold(protocol, np.flatnonzero(~av.test_mask), np.flatnonzero(av.test_mask))]
    if protocol == "speaker":
        return [Fold(s, np.flatnonzero(av.speakers != s), np.flatnonzero(av.speakers == s)) for s in av.speaker_names]
    raise ValueError(f"unknown protocol {protocol!r}; choose official, speaker or hard")


def degrade_images(
    images: torch.Tensor, fit_on: torch.Tensor, n_components: int, noise_std: float, seed: int = 0
) -> torch.Tensor:
    """Keep only the first ``n_components`` principal components (fitted on ``fit_on``), then add Gaussian noise."""
    flat_fit = fit_on.flatten(1)
    mean = flat_fit.mean(0, keepdim=True)
    _, _, v = torch.pca_lowrank(flat_fit - mean, q=n_components, center=False, niter=4)
    flat = images.flatten(1)
    recon = (flat - mean) @ v @ v.T + mean
    g = torch.Generator().manual_seed(seed)
    noisy = recon + noise_std * torch.randn(recon.shape, generator=g)
    return noisy.clamp(0, 1).view_as(images)


def degrade_audio(waves: torch.Tensor, snr_db: float, seed: int = 0) -> torch.Tensor:
    """Add white noise at ``snr_db`` (signal power measured over the whole window)."""
    return au.add_noise(waves, snr_db, generator=torch.Generator().manual_seed(seed))
