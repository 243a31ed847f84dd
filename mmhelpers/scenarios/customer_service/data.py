"""Calls to the help desk: the generated set (requests x voices x telephone line x noise) and your own recordings.

``build_calls(plan)`` speaks every request in synthetic voices and sends it down a telephone line with background
noise. Training requests are each spoken by ``train_takes`` training voices at random noise levels; every test
request is spoken at every SNR of ``test_snrs`` (``None`` = a quiet room) by voices never heard in training, so
accuracy can be reported by SNR on unseen voices (saying requests no training call said). The build is deterministic in
``plan.seed``, cached under ``<cache>/calls/`` in shards keyed by the plan and the synthesisers' versions
(an interrupted build resumes), and ``EMBEDDED`` is the small plan the notebooks run by default.

``load_call_folder(folder)`` reads your own calls: an audiofolder with ``metadata.csv`` of ``file_name``,
``intent`` and optionally ``transcript``, ``speaker`` (then whole speakers are held out) and ``split``.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import zipfile
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmhelpers.atomic import atomic_open, clean_stale_temps, write_json
from mmhelpers.audio import load_audio
from mmhelpers.data.folders import read_folder
from mmhelpers.errors import DataError
from mmhelpers.paths import cache_root
from mmhelpers.speech import Voice, espeak_version, flite_version, synthesize
from mmhelpers.telephone import TELEPHONE_SR, Channel, babble_noise, telephone_channel

from .requests import INTENTS, SPLITS, TEMPLATES, Request, make_requests, refill, requests_digest, split_requests
from .voices import speakers

BUILD_VERSION = 5  # bump when the build's code changes what it makes
NOISES = ("white", "pink", "babble")


@dataclass(frozen=True)
class CallPlan:
    """What to generate: requests per intent, speakers per split, takes per request, noise levels (None = quiet)."""

    per_intent: int = 40
    n_train_voices: int = 8  # espeak speakers; Flite's and Piper's voices come on top (see voices.speakers)
    n_val_voices: int = 4
    n_test_voices: int = 2
    flite_takes: int = 3  # speed-and-pitch settings of each Flite voice (training and test)
    train_takes: int = 2
    val_takes: int = 1
    train_snrs: tuple[float | None, ...] = (0.0, 5.0, 10.0, 20.0, None)
    test_snrs: tuple[float | None, ...] = (0.0, 5.0, 10.0, 20.0, None)
    seed: int = 0


FULL = CallPlan()
# The notebooks' default: 8 requests per intent, 3 espeak + 6 Flite + 2 Piper training voices, the test requests
# at 0 dB and in a quiet room
EMBEDDED = CallPlan(per_intent=8, n_train_voices=3, n_val_voices=2, n_test_voices=1, flite_takes=2, train_takes=1,
                    test_snrs=(0.0, None))  # fmt: skip


@dataclass(frozen=True)
class Call:
    """One call: the request, who said it and over what line."""

    text: str
    intent: str
    split: str
    voice: str  # Voice.id, or the speaker column of your own data
    noise: str | None = None  # "white", "pink", "babble" or None (quiet)
    snr_db: float | None = None
    phrasing: int = -1  # generated calls: the template the request was written from (-1: your own calls)

    @property
    def label(self) -> int:
        return INTENTS.index(self.intent)


@dataclass
class CallSet:
    """Calls with their audio (mono float at ``sr``); ``index(split)`` gives a split's positions."""

    calls: list[Call]
    waves: list[torch.Tensor]
    sr: int
    intents: tuple[str, ...] = INTENTS
    source: str = ""
    voices: dict[str, list[str]] = field(default_factory=dict)  # split -> voice ids

    def __len__(self) -> int:
        return len(self.calls)

    def index(self, split: str, snr: float | None | str = "any") -> np.ndarray:
        """Positions of ``split``'s calls, all of them or only those at one SNR (``None`` for quiet ones)."""
        return np.array([i for i, c in enumerate(self.calls) if c.split == split
                         and (snr == "any" or c.snr_db == snr)], dtype=np.int64)  # fmt: skip

    def extended(self, other: CallSet) -> CallSet:
        """These calls followed by ``other``'s (same rate and intents), e.g. augmented copies of the training calls."""
        if other.sr != self.sr or tuple(other.intents) != tuple(self.intents):
            raise ValueError(f"cannot join calls at {other.sr} Hz with intents {other.intents} to calls at {self.sr} Hz"
                             f" with intents {self.intents}")  # fmt: skip
        voices = {s: [*self.voices.get(s, []), *(v for v in other.voices.get(s, []) if v not in self.voices.get(s, []))]
                  for s in {*self.voices, *other.voices}}  # fmt: skip
        return CallSet([*self.calls, *other.calls], [*self.waves, *other.waves], self.sr, self.intents,
                       f"{self.source} + {other.source}", voices)  # fmt: skip

    def digest(self) -> str:
        """A hash of who said what over which line in which split (not of the audio): results from other calls
        are never averaged with these (``seed_results.merge_seed`` compares it as a setting)."""
        rows = [[c.text, c.intent, c.split, c.voice, c.noise, c.snr_db] for c in self.calls]
        return hashlib.sha256(json.dumps([self.sr, list(self.intents), rows]).encode()).hexdigest()[:16]

    @property
    def labels(self) -> torch.Tensor:
        return torch.tensor([self.intents.index(c.intent) for c in self.calls], dtype=torch.long)

    @property
    def texts(self) -> list[str]:
        return [c.text for c in self.calls]


def plan_calls(plan: CallPlan) -> tuple[list[tuple[Request, str, Voice, str | None, float | None]], dict]:
    """Who says what over which line: (request, split, voice, noise, snr) per call, and the speakers."""
    rng = np.random.default_rng(plan.seed + 2)
    by_split = split_requests(make_requests(plan.per_intent, plan.seed), plan.seed)
    voices = speakers(plan.n_train_voices, plan.n_val_voices, plan.n_test_voices, plan.seed,
                      flite_takes=plan.flite_takes, flite_test_takes=plan.flite_takes)  # fmt: skip
    out = []

    def line(snrs: tuple[float | None, ...]) -> tuple[str | None, float | None]:
        snr = snrs[int(rng.integers(len(snrs)))]
        return (None, None) if snr is None else (str(rng.choice(NOISES)), float(snr))

    for split in SPLITS:
        pool = voices[split]
        for r in by_split[split]:
            if split == "test":
                for snr in plan.test_snrs:
                    noise = None if snr is None else str(rng.choice(NOISES))
                    out.append((r, split, pool[int(rng.integers(len(pool)))], noise, snr))
            else:
                takes = plan.train_takes if split == "train" else plan.val_takes
                for k in rng.permutation(len(pool))[:takes]:
                    out.append((r, split, pool[int(k)], *line(plan.train_snrs)))
    return out, voices


def written_requests(calls: CallSet, per_request: int = 10, seed: int = 0) -> list[tuple[str, str]]:
    """More training text for the text heads, no audio: ``per_request`` requests written anew (``refill``) from the
    phrasing of every distinct training request of the generated calls, none equal to a validation or test
    request. Returns (text, intent) pairs; none for your own calls (they have no phrasings to write from)."""
    if per_request <= 0:
        return []
    seen: dict[str, Request] = {}
    for c in calls.calls:
        if c.split == "train" and c.phrasing >= 0 and c.intent in TEMPLATES and c.text not in seen:
            seen[c.text] = Request(c.text, c.intent, c.phrasing)
    held = [c.text for c in calls.calls if c.split != "train"]
    return [(r.text, r.intent) for r in refill(list(seen.values()), per_request, seed, exclude=held)]


def _key(plan: CallPlan) -> str:
    try:
        piper_version = importlib.metadata.version("piper-tts")
    except importlib.metadata.PackageNotFoundError:  # pragma: no cover - a dependency
        piper_version = "none"
    blob = {"plan": asdict(plan), "espeak": espeak_version(), "flite": flite_version(), "piper": piper_version,
            "build": BUILD_VERSION, "sr": TELEPHONE_SR, "requests": requests_digest()}  # fmt: skip
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def build_calls(plan: CallPlan = EMBEDDED, *, shard_size: int = 256, progress: bool = True) -> CallSet:
    """Generate (or load from the cache) the calls of ``plan``: a CallSet at 8 kHz."""
    planned, voices = plan_calls(plan)
    folder = cache_root() / "calls" / f"calls-{_key(plan)}"
    folder.mkdir(parents=True, exist_ok=True)
    clean_stale_temps(folder)
    write_json(folder / "plan.json", asdict(plan))
    waves: list[torch.Tensor] = []
    with tqdm(total=len(planned), desc="calls: speak and send", unit="call", disable=not progress) as bar:
        for s, start in enumerate(range(0, len(planned), shard_size)):
            chunk = planned[start : start + shard_size]
            path = folder / f"shard-{s:05d}.npz"
            shard = _load_shard(path, len(chunk))
            if shard is None:
                shard = _make_shard(chunk, plan.seed * 1_000_003 + start)
                with atomic_open(path) as f:
                    lengths = np.array([len(w) for w in shard], dtype=np.int64)
                    np.savez(f, pcm=np.concatenate(shard) if shard else np.zeros(0, np.int16), lengths=lengths)
            waves += [torch.from_numpy(w.astype(np.float32) / 32768.0) for w in shard]
            bar.update(len(chunk))
    calls = [Call(r.text, r.intent, split, v.id, noise, snr, r.template) for r, split, v, noise, snr in planned]
    return CallSet(calls, waves, TELEPHONE_SR, INTENTS, f"generated calls ({_describe(plan, voices)})",
                   {k: [v.id for v in vs] for k, vs in voices.items()})  # fmt: skip


def _describe(plan: CallPlan, voices: dict[str, list[Voice]]) -> str:
    n = {k: len(v) for k, v in voices.items()}
    return (f"{plan.per_intent} requests per intent, {n['train']}/{n['val']}/{n['test']} train/val/test voices,"
            f" seed {plan.seed}")  # fmt: skip


def _load_shard(path: Path, n: int) -> list[np.ndarray] | None:
    try:
        with np.load(path) as z:
            pcm, lengths = z["pcm"], z["lengths"]
        if len(lengths) != n or int(lengths.sum()) != len(pcm):
            return None
        return np.split(pcm, np.cumsum(lengths)[:-1]) if n else []
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # damaged: built again, not trusted
        return None


def _make_shard(chunk: list, seed: int) -> list[np.ndarray]:
    """Speak the chunk's requests (one synthesiser call per voice) and send each down its line: int16 at 8 kHz."""
    gen = torch.Generator().manual_seed(seed)
    clean: dict[int, torch.Tensor] = {}
    rate: dict[int, int] = {}  # engines differ: espeak-ng and Piper speak at 22.05 kHz, Flite at 16 kHz
    by_voice: dict[Voice, list[int]] = {}
    for i, (_, _, voice, _, _) in enumerate(chunk):
        by_voice.setdefault(voice, []).append(i)
    for voice, idx in by_voice.items():
        clips, sr = synthesize([chunk[i][0].text for i in idx], voice)
        clean.update({i: torch.from_numpy(c) for i, c in zip(idx, clips, strict=True)})
        rate.update(dict.fromkeys(idx, sr))
    out = []
    for i, (_, _, _, noise, snr) in enumerate(chunk):
        babble = None
        if noise == "babble":  # three other callers of the chunk talking in the background (at this call's rate)
            others = [
                clean[j] for j in torch.randperm(len(chunk), generator=gen).tolist() if j != i and rate[j] == rate[i]
            ]
            babble = babble_noise(others[:3] or [clean[i].flip(0)], clean[i].numel(), gen)
        wave = telephone_channel(clean[i], rate[i], Channel(noise=noise if noise != "babble" else None, snr_db=snr),
                                 noise=babble, generator=gen)  # fmt: skip
        out.append((wave.clamp(-1, 1) * 32767).round().to(torch.int16).numpy())
    return out


def load_call_folder(path: str | Path, sr: int = TELEPHONE_SR, seed: int = 0, progress: bool = True) -> CallSet:
    """Your own calls: ``metadata.csv`` with ``file_name``, ``intent`` and optional ``transcript``, ``speaker``,
    ``split`` columns; audio at any rate, resampled to ``sr``. Intents are the folder's own (any number).

    Without a ``split`` column, whole speakers are held out when there is a ``speaker`` column (about 20% test,
    10% val), else calls are split at random within each intent."""
    records = read_folder(path, label_column="intent", kind="audio")
    _, names = records.labels()
    columns = records.columns
    texts = records.column("transcript") if "transcript" in columns else [""] * len(records)
    speakers_ = records.column("speaker") if "speaker" in columns else [""] * len(records)
    splits = records.column("split") if "split" in columns else _split(records.column("intent"), speakers_, seed)
    for i, s in enumerate(splits):
        if s not in SPLITS:
            raise DataError(records.source, f"{records._where(i)}: split {s!r} is not one of {', '.join(SPLITS)}")
    waves = []
    for p in tqdm(records.paths("file_name"), desc="calls: read", unit="clip", disable=not progress):
        wave, _ = load_audio(p, sr=sr, mono=True)
        if wave.numel() == 0:
            raise DataError(p, "the recording is empty (no samples)")
        waves.append(wave)
    calls = [Call(t, c, s, v) for t, c, s, v in zip(texts, records.column("intent"), splits, speakers_, strict=True)]
    return CallSet(calls, waves, sr, tuple(names), f"your calls ({records.source})")


def _split(intents: list[str], speakers_: list[str], seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    if any(speakers_):
        names = sorted(set(speakers_))
        order = [names[i] for i in rng.permutation(len(names))]
        n_test, n_val = max(1, round(0.2 * len(names))), max(1, round(0.1 * len(names)))
        if len(names) < 3:
            raise ValueError(f"holding out whole speakers needs at least 3 of them, the folder has {len(names)}")
        where = {n: "test" for n in order[:n_test]} | {n: "val" for n in order[n_test : n_test + n_val]}
        return [where.get(s, "train") for s in speakers_]
    out = ["train"] * len(intents)
    for intent in sorted(set(intents)):
        idx = [i for i, c in enumerate(intents) if c == intent]
        idx = [idx[j] for j in rng.permutation(len(idx))]
        n_test, n_val = max(1, round(0.2 * len(idx))), max(1, round(0.1 * len(idx))) if len(idx) >= 5 else 0
        for j in idx[:n_test]:
            out[j] = "test"
        for j in idx[n_test : n_test + n_val]:
            out[j] = "val"
    return out


def load_calls(data: str | Path = "embedded", seed: int = 0, progress: bool = True) -> CallSet:
    """The notebooks' ``DATA``: "embedded" (the small generated set), "real" (the full generated set: no spoken
    intent corpus ships offline; the real human recordings are scored for recognition in notebook 02), or the
    path of your folder of calls."""
    if str(data) == "embedded":
        return build_calls(replace(EMBEDDED, seed=seed), progress=progress)
    if str(data) in ("real", "full"):
        return build_calls(replace(FULL, seed=seed), progress=progress)
    return load_call_folder(data, seed=seed, progress=progress)
