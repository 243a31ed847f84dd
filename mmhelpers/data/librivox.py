"""Five LibriVox utterances (Jane Austen's "Sense and Sensibility", one reader, 16 kHz) with transcripts, as
Debian's ``pocketsphinx-testdata`` ships them: real read speech to score speech recognition on.

    sudo apt-get install pocketsphinx-testdata    # /usr/share/pocketsphinx/test/data/librivox
"""

from __future__ import annotations

import re
from pathlib import Path

from mmhelpers.audio import load_audio
from mmhelpers.data.asterisk import SpokenPrompts
from mmhelpers.errors import DataError

LIBRIVOX = Path("/usr/share/pocketsphinx/test/data/librivox")
LIBRIVOX_SR = 16000
_LINE = re.compile(r"^<s>\s*(?P<text>.*?)\s*</s>\s*\((?P<id>[^)]+)\)\s*$")


def parse_transcription(path: Path) -> dict[str, str]:
    """``<s> words </s> (utterance-id)`` lines -> {utterance id: words}; a DataError names a malformed line."""
    out: dict[str, str] = {}
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        m = _LINE.match(line.strip())
        if m is None:
            raise DataError(path, f"line {n}: expected '<s> words </s> (id)', got {line[:60]!r}")
        out[m["id"]] = m["text"]
    return out


def load_librivox(folder: str | Path = LIBRIVOX) -> SpokenPrompts:
    """The utterances with their transcripts (lower case, no punctuation, as the package writes them)."""
    folder = Path(folder)
    if not (folder / "transcription").is_file():
        raise DataError(folder, "no LibriVox test data here: `sudo apt-get install pocketsphinx-testdata` (Debian)")
    texts = parse_transcription(folder / "transcription")
    names, waves, transcripts = [], [], []
    for name, text in sorted(texts.items()):
        wave, _ = load_audio(folder / f"{name}.wav", expect_sr=LIBRIVOX_SR)
        names.append(name)
        waves.append(wave)
        transcripts.append(text)
    return SpokenPrompts(
        names, waves, transcripts, LIBRIVOX_SR, "LibriVox via Debian pocketsphinx-testdata (5 utterances)"
    )
