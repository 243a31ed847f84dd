"""The callers: synthetic voices, with whole voices held out for testing.

espeak-ng gives accents (US, British, Scottish, Received Pronunciation, Lancaster, West Midlands, Caribbean) and
voice variants (male ``m1``-``m7``, female ``f1``-``f5``, ``klatt`` formant voices); each speaker here is an
accent and a variant at its own speed and pitch. Piper's neural voice "joe" speaks too, at two speeds. Test
speakers share neither their accent-and-variant pair nor, for two accents, even the accent with any training
speaker: the model is scored on voices it has never heard.
"""

from __future__ import annotations

import numpy as np

from mmhelpers.speech import Voice

ACCENTS = ("en-us", "en-gb", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029")
VARIANTS = ("m1", "m2", "m3", "m4", "m5", "m6", "m7", "f1", "f2", "f3", "f4", "f5", "klatt", "klatt2", "klatt3")
TEST_ACCENTS = ("en-gb-x-gbcwmd", "en-029")  # heard only in testing
TEST_VARIANTS = ("m6", "f4", "klatt3")  # heard only in testing


def speakers(n_train: int = 24, n_val: int = 4, n_test: int = 8, seed: int = 0,
             piper: bool = True) -> dict[str, list[Voice]]:  # fmt: skip
    """Train, val and test speakers; no accent-and-variant pair in two splits, test ones never heard in training.

    Train and val use the other accents and variants; test speakers have a test accent or a test variant (or both).
    Speed (words per minute) and pitch are drawn per speaker. Piper's "joe" is a training speaker at two speeds."""
    rng = np.random.default_rng(seed)
    seen = [(a, v) for a in ACCENTS if a not in TEST_ACCENTS for v in VARIANTS if v not in TEST_VARIANTS]
    unseen = [(a, v) for a in ACCENTS for v in VARIANTS if a in TEST_ACCENTS or v in TEST_VARIANTS]
    if n_train + n_val > len(seen) or n_test > len(unseen):
        raise ValueError(f"at most {len(seen)} train+val and {len(unseen)} test speakers, asked {n_train + n_val}"
                         f" and {n_test}")  # fmt: skip
    pick_seen = [seen[i] for i in rng.permutation(len(seen))[: n_train + n_val]]
    pick_unseen = [unseen[i] for i in rng.permutation(len(unseen))[:n_test]]

    def voice(accent: str, variant: str) -> Voice:
        return Voice("espeak", f"{accent}+{variant}", speed=int(rng.integers(135, 195)), pitch=int(rng.integers(25, 75)))

    out = {"train": [voice(*p) for p in pick_seen[:n_train]], "val": [voice(*p) for p in pick_seen[n_train:]],
           "test": [voice(*p) for p in pick_unseen]}  # fmt: skip
    if piper:
        out["train"] += [Voice("piper", "joe", speed=160), Voice("piper", "joe", speed=195)]
    return out
