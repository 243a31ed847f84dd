"""Tests for mmhelpers.caption_metrics: BLEU and CIDEr-D against hand computations and pycocoevalcap, baselines."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

pytest.importorskip("pycocoevalcap")

from mmhelpers.caption_metrics import (  # noqa: E402
    METRIC_KEYS,
    caption_scores,
    consensus_scores,
    most_frequent_caption,
    nearest_neighbour_captions,
)

CORPUS = [
    ["a dog runs on the grass", "a brown dog is running across a lawn", "the dog plays outside"],
    ["two children play in the park", "kids playing on a swing", "two young girls at a playground"],
    ["a man rides a bike on the road", "a cyclist in a red shirt", "a person riding a bicycle down a street"],
    ["a cat sleeps on a sofa", "a grey cat lying on the couch", "a sleeping kitten"],
]


def test_identical_hypothesis_scores_one() -> None:
    s = caption_scores([["The cat sat on the mat."]], ["the cat  sat on the MAT"])
    assert set(s) == set(METRIC_KEYS)
    for k in ("bleu1", "bleu2", "bleu3", "bleu4"):
        assert s[k] == pytest.approx(1.0, abs=1e-6)
    assert s["cider"] == 0.0  # idf over a one-image corpus is log(1/1) = 0 for every n-gram


def test_bleu_by_hand_with_brevity_penalty() -> None:
    # 4 hypothesis words: the, sat, on match (p1 = 3/4); bigrams: only "sat on" (p2 = 1/3); BP = exp(1 - 6/4).
    s = caption_scores([["the cat sat on the mat"]], ["the dog sat on"])
    assert s["bleu1"] == pytest.approx(0.75 * math.exp(-0.5), rel=1e-6)
    assert s["bleu2"] == pytest.approx(math.sqrt(0.75 * 1 / 3) * math.exp(-0.5), rel=1e-6)


def test_bleu_is_pooled_over_the_corpus_with_the_closest_reference_length() -> None:
    # Image 1: clipped matches against either reference: 4/4 unigrams, 2/3 bigrams; closest ref length 5.
    # Image 2: a perfect 5-word match. Pooled: p1 = 9/9, p2 = 6/7, BP = exp(1 - 10/9).
    refs = [["the cat sat on the mat", "a dog sat on it"], ["a man rides a bike"]]
    s = caption_scores(refs, ["the dog sat on", "a man rides a bike"])
    bp = math.exp(1 - 10 / 9)
    assert s["bleu1"] == pytest.approx(bp, rel=1e-6)
    assert s["bleu2"] == pytest.approx(math.sqrt(6 / 7) * bp, rel=1e-6)


def test_cider_rewards_the_right_caption() -> None:
    right = caption_scores(CORPUS, [refs[0] for refs in CORPUS])
    wrong = caption_scores(CORPUS, [CORPUS[(i + 1) % 4][0] for i in range(4)])
    assert right["cider"] > 1.0 > 0.2 > wrong["cider"]
    assert right["bleu4"] > wrong["bleu4"]


def test_values_equal_pycocoevalcap_called_directly() -> None:
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    hyps = ["a dog is running on grass", "children play in a park", "a man on a bike", "a cat on a couch"]
    gts = {i: refs for i, refs in enumerate(CORPUS)}  # already lowercase words without punctuation
    res = {i: [h] for i, h in enumerate(hyps)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    s = caption_scores(CORPUS, [h.capitalize() + "." for h in hyps])  # case and punctuation are normalised
    assert [s[f"bleu{n}"] for n in range(1, 5)] == pytest.approx(bleu, rel=1e-12)
    assert s["cider"] == pytest.approx(cider, rel=1e-12)


def test_bad_inputs_raise_clear_errors() -> None:
    with pytest.raises(ValueError, match="2 hypotheses but 1 reference"):
        caption_scores([["a dog"]], ["a dog", "a cat"])
    with pytest.raises(ValueError, match=r"references\[1\] is empty"):
        caption_scores([["a dog"], []], ["a dog", "a cat"])
    with pytest.raises(ValueError, match=r"references\[0\]\[1\] has no words"):
        caption_scores([["a dog", "..."]], ["a dog"])
    with pytest.raises(ValueError, match="no captions"):
        caption_scores([], [])
    with pytest.raises(TypeError):
        caption_scores([["a dog"]], "a dog")


def test_consensus_prefers_the_typical_caption() -> None:
    caps = ["a dog runs on the grass", "a dog runs on grass", "a black dog runs on the grass", "a cat"]
    scores = consensus_scores(caps)
    assert int(np.argmax(scores)) == 0 and int(np.argmin(scores)) == 3
    assert consensus_scores(["only one"]) == [1.0]


def test_nearest_neighbour_uses_cosine_and_consensus() -> None:
    train = np.array([[1.0, 0.0], [0.0, 1.0], [8.0, 8.0]])
    captions = [
        ["a cat", "a dog runs on the grass", "a dog runs on grass", "a black dog runs on the grass"],
        ["a bird flies"],
        ["a man rides a bike"],
    ]
    query = np.array([[10.0, 1.0], [0.1, 3.0], [5.0, 5.2]])  # Euclidean would pick image 2 for the first
    assert nearest_neighbour_captions(train, captions, query) == [
        "a dog runs on the grass", "a bird flies", "a man rides a bike"]  # fmt: skip
    as_torch = nearest_neighbour_captions(torch.tensor(train), captions, torch.tensor(query, dtype=torch.float32))
    assert as_torch == nearest_neighbour_captions(train, captions, query)
    # k = 2 pools the captions of the two nearest images; the consensus is still the typical dog caption.
    assert nearest_neighbour_captions(train, captions, query[:1], k=2) == ["a dog runs on the grass"]
    with pytest.raises(ValueError, match="3 training feature rows but 2"):
        nearest_neighbour_captions(train, captions[:2], query)
    with pytest.raises(ValueError, match="feature sizes differ"):
        nearest_neighbour_captions(train, captions, np.ones((1, 3)))
    with pytest.raises(ValueError, match="non-empty list"):
        nearest_neighbour_captions(train, [*captions[:2], []], query)


def test_most_frequent_caption_normalises_and_breaks_ties_alphabetically() -> None:
    train = [["A dog runs.", "the cat", "a dog runs"], ["THE CAT!", "a dog  runs", "a bird"]]
    assert most_frequent_caption(train) == "a dog runs"  # 3 times, after lowercasing and punctuation
    tie = [["the cat", "a dog runs"], ["The cat.", "A dog runs"]]
    assert most_frequent_caption(tie) == "a dog runs"  # 2 each: alphabetical order decides
    assert most_frequent_caption(tie[::-1]) == "a dog runs"
    with pytest.raises(ValueError, match="no training captions"):
        most_frequent_caption([["..."]])


def test_an_empty_hypothesis_scores_without_error() -> None:
    s = caption_scores([["a dog runs"], ["a cat sleeps"]], ["", "a cat"])  # a model may emit <eos> first
    assert all(math.isfinite(v) for v in s.values()) and s["bleu1"] < 0.5
