"""The callers: synthetic voices from three engines, with whole voices held out for testing.

- espeak-ng: accents (US, British, Scottish, Received Pronunciation, Lancaster, West Midlands, Caribbean) times
  variants (male ``m1``-``m7``, female ``f1``-``f5``, ``klatt`` formant voices), each at its own speed and pitch.
  Robotic: Whisper tiny.en mishears 40-80% of their words over the line, against 4-8% of real people's (LibriVox,
  the Asterisk prompts) and 10-25% of Flite's, so they are a minority of the callers (8 of 19 training voices,
  2 of 5 test voices): enough accents to learn from, not so many that the test measures robotic voices.
- Flite: CMU's ``awb`` (Scottish male), ``rms`` (US male), ``kal16`` (US male, diphone) in training, and ``slt``
  (US female) heard only in testing, each at a few speeds and pitches.
- Piper: the neural voice "joe", in training at two speeds.

Test speakers share nothing with training ones: espeak test speakers have an accent or a variant no training
speaker has, and the Flite test voice is a different person from the Flite training voices.
"""

from __future__ import annotations

import numpy as np

from mmhelpers.speech import Voice

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
TEST_ACCENTS = ("en-gb-x-gbcwmd", "en-029")  # espeak accents heard only in testing
TEST_VARIANTS = ("m6", "f4", "klatt3")  # espeak variants heard only in testing
FLITE_TRAIN = ("awb", "rms", "kal16")
FLITE_TEST = ("slt",)
FLITE_PITCH = {"awb": (100, 130), "rms": (90, 120), "kal16": (95, 125), "slt": (150, 200)}  # Hz, low and high


def speakers(n_train: int = 8, n_val: int = 4, n_test: int = 2, seed: int = 0, flite_takes: int = 3,
             flite_test_takes: int = 3, piper: bool = True) -> dict[str, list[Voice]]:  # fmt: skip
    """Train, val and test speakers: ``n_*`` espeak speakers per split, plus Flite's voices (``flite_takes``
    speed-and-pitch settings of each training voice, ``flite_test_takes`` of the test voice) and Piper's "joe".

    No espeak accent-and-variant pair is in two splits; speed and pitch are drawn per speaker."""
    rng = np.random.default_rng(seed)
    seen = [(a, v) for a in ACCENTS if a not in TEST_ACCENTS for v in VARIANTS if v not in TEST_VARIANTS]
    unseen = [(a, v) for a in ACCENTS for v in VARIANTS if a in TEST_ACCENTS or v in TEST_VARIANTS]
    if n_train + n_val > len(seen) or n_test > len(unseen):
        raise ValueError(f"at most {len(seen)} train+val and {len(unseen)} test espeak speakers, asked"
                         f" {n_train + n_val} and {n_test}")  # fmt: skip
    pick_seen = [seen[i] for i in rng.permutation(len(seen))[: n_train + n_val]]
    pick_unseen = [unseen[i] for i in rng.permutation(len(unseen))[:n_test]]

    def espeak(accent: str, variant: str) -> Voice:
        return Voice(
            "espeak", f"{accent}+{variant}", speed=int(rng.integers(125, 170)), pitch=int(rng.integers(25, 75))
        )

    def flite(name: str, takes: int) -> list[Voice]:
        low, high = FLITE_PITCH[name]
        return [Voice("flite", name, speed=int(rng.integers(135, 190)), pitch=int(rng.integers(low, high)))
                for _ in range(takes)]  # fmt: skip

    out = {"train": [espeak(*p) for p in pick_seen[:n_train]], "val": [espeak(*p) for p in pick_seen[n_train:]],
           "test": [espeak(*p) for p in pick_unseen]}  # fmt: skip
    out["train"] += [v for name in FLITE_TRAIN for v in flite(name, flite_takes)]
    out["test"] += [v for name in FLITE_TEST for v in flite(name, flite_test_takes)]
    if piper:
        out["train"] += [Voice("piper", "joe", speed=160), Voice("piper", "joe", speed=195)]
    return out
