"""Asterisk telephone prompts: 568 recordings (one speaker, 8 kHz) joined with their transcripts."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm.auto import tqdm

from mmhelpers.audio import load_audio
from mmhelpers.data.fetch import fetch
from mmhelpers.data.registry import get_dataset
from mmhelpers.errors import DataError

ASTERISK_SR = 8000


@dataclass
class SpokenPrompts:
    """Recordings with their transcripts; ``names`` are paths under wav/ without .wav (e.g. digits/7)."""

    names: list[str]
    waves: list[torch.Tensor]
    transcripts: list[str]
    sr: int
    source: str

    def __len__(self) -> int:
        return len(self.names)

    @property
    def categories(self) -> list[str]:
        """The folder of each prompt (``digits``, ``letters``, ...) or ``ivr`` for top-level prompts."""
        return [n.split("/")[0] if "/" in n else "ivr" for n in self.names]


def parse_transcripts(path: Path) -> dict[str, str]:
    """Parse ``core-sounds-en.txt`` (``name: transcript`` lines; ``;`` starts a comment)."""
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not valid UTF-8 at byte {e.start}") from e
    out: dict[str, str] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(";") or ":" not in line:
            continue
        name, transcript = line.split(":", 1)
        if transcript.strip():
            out[name.strip()] = transcript.strip()
    return out


def load_asterisk_prompts(include_non_speech: bool = False, progress: bool = True) -> SpokenPrompts:
    """Every prompt that has both a WAV and a transcript; bracketed non-speech ones only if asked."""
    folder = fetch("asterisk_prompts", progress=progress)
    transcripts = parse_transcripts(folder / "core-sounds-en.txt")
    wav_names = sorted(
        s.path[len("wav/") : -len(".wav")] for s in get_dataset("asterisk_prompts").files if s.path.endswith(".wav")
    )
    names, waves, texts = [], [], []
    for name in tqdm(wav_names, desc="asterisk: read", unit="clip", disable=not progress):
        text = transcripts.get(name)
        if text is None or (not include_non_speech and text.startswith("[")):
            continue
        wave, _ = load_audio(folder / "wav" / f"{name}.wav", expect_sr=ASTERISK_SR)
        names.append(name)
        waves.append(wave)
        texts.append(text)
    return SpokenPrompts(names, waves, texts, ASTERISK_SR, "Asterisk core prompts (registry: asterisk_prompts)")
