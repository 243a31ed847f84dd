"""Caption metrics (BLEU-1..4, CIDEr-D) from ``pycocoevalcap``, and two baselines that need no model.

Scores are corpus-level, as the COCO caption evaluation reports them: BLEU pools n-gram counts and lengths
over all images (brevity penalty against the closest reference length), and ``cider`` is pycocoevalcap's
``Cider``, which is CIDEr-D (clipped n-gram counts, a Gaussian length penalty, x10), averaged over images.
CIDEr's idf weights come from the references of the images being scored, so it is only meaningful over a
corpus: one image alone scores 0, and scores of different test sets are not comparable.

Tokenisation: COCO runs the Stanford PTB tokenizer, which needs Java; we split with ``caption_words``
instead (lowercase runs of letters and digits, punctuation dropped), the same split the caption tokenizer
uses. It differs from PTB only on punctuation inside words ("dog's" -> dog, s; PTB gives dog, 's).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

import numpy as np
import torch

from .caption_tokenizer import caption_words

METRIC_KEYS = ("bleu1", "bleu2", "bleu3", "bleu4", "cider")


def _joined(text: str) -> str:
    """A caption as space-separated ``caption_words``, the form pycocoevalcap's scorers split on spaces."""
    return " ".join(caption_words(text))


def _check_references(references: Sequence[Sequence[str]]) -> list[list[str]]:
    """Joined references; ValueError naming the first image with no reference or a reference with no words."""
    out = []
    for i, refs in enumerate(references):
        if isinstance(refs, str):
            raise TypeError(f"references[{i}] must be a list of captions, got a string")
        if len(refs) == 0:
            raise ValueError(f"references[{i}] is empty: every image needs at least one reference caption")
        joined = [_joined(r) for r in refs]
        for j, r in enumerate(joined):
            if not r:
                raise ValueError(f"references[{i}][{j}] has no words: {refs[j]!r}")
        out.append(joined)
    return out


def caption_scores(references: Sequence[Sequence[str]], hypotheses: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU-1..4 and CIDEr-D of one hypothesis per image against that image's references."""
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider

    if isinstance(hypotheses, str):
        raise TypeError("hypotheses must be a list of captions (one per image), got a string")
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(hypotheses)} hypotheses but {len(references)} reference lists; need one per image")
    if len(hypotheses) == 0:
        raise ValueError("no captions to score")
    gts = dict(enumerate(_check_references(references)))
    res = {i: [_joined(h)] for i, h in enumerate(hypotheses)}
    bleu, _ = Bleu(4).compute_score(gts, res, verbose=0)
    cider, _ = Cider().compute_score(gts, res)
    return {**{f"bleu{n + 1}": float(b) for n, b in enumerate(bleu)}, "cider": float(cider)}


def consensus_scores(captions: Sequence[str]) -> list[float]:
    """Each caption's mean of BLEU-1..4 against the other captions as references (1.0 for a lone caption)."""
    from pycocoevalcap.bleu.bleu_scorer import BleuScorer

    joined = [_joined(c) for c in captions]
    if len(joined) == 1:
        return [1.0]
    scores = []
    for i, hyp in enumerate(joined):
        scorer = BleuScorer(n=4)
        scorer += (hyp, joined[:i] + joined[i + 1 :])
        bleu, _ = scorer.compute_score(option="closest", verbose=0)
        scores.append(float(np.mean(bleu)))
    return scores


def _as_matrix(x, name: str) -> np.ndarray:
    """Rows of features as float64, L2-normalised, from a NumPy array or a torch tensor."""
    a = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    a = a.astype(np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name} must be 2-D (n, d), got shape {a.shape}")
    return a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)


def nearest_neighbour_captions(
    train_features, train_captions: Sequence[Sequence[str]], query_features, k: int = 1
) -> list[str]:
    """For each query, the consensus caption of its ``k`` cosine-nearest training images (Devlin et al. 2015).

    The candidates are all captions of the ``k`` nearest images; the one with the highest ``consensus_scores``
    (mean BLEU-1..4 against the other candidates) wins, ties going to the nearer image, then the earlier caption.
    """
    train = _as_matrix(train_features, "train_features")
    query = _as_matrix(query_features, "query_features")
    if len(train) != len(train_captions):
        raise ValueError(f"{len(train)} training feature rows but {len(train_captions)} caption lists")
    if train.shape[1] != query.shape[1]:
        raise ValueError(f"feature sizes differ: train {train.shape[1]}, query {query.shape[1]}")
    if not 1 <= k <= len(train):
        raise ValueError(f"k must be between 1 and {len(train)}, got {k}")
    for i, caps in enumerate(train_captions):
        if isinstance(caps, str) or len(caps) == 0:
            raise ValueError(f"train_captions[{i}] must be a non-empty list of captions")
    sims = query @ train.T  # (Q, N) cosine similarities
    order = np.argsort(-sims, axis=1, kind="stable")[:, :k]  # nearest first, ties to the lower index
    cache: dict[tuple[int, ...], str] = {}
    out = []
    for row in order:
        key = tuple(int(i) for i in row)
        if key not in cache:
            candidates = [c for i in key for c in train_captions[i]]
            scores = consensus_scores(candidates)
            cache[key] = candidates[int(np.argmax(scores))]
        out.append(cache[key])
    return out


def most_frequent_caption(train_captions: Sequence[Sequence[str]]) -> str:
    """The most frequent caption after normalisation to ``caption_words``; ties go to the alphabetically first."""
    counts = Counter(j for caps in train_captions for c in caps if (j := _joined(c)))
    if not counts:
        raise ValueError("no training captions with words")
    return min(counts, key=lambda c: (-counts[c], c))
