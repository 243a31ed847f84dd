"""Region phrases: write each region of an image as the description phrase it matches, for an LM to read as text.

A LENS-style front end (Berrios et al. 2023: vision modules write tags and captions, a frozen LM reasons over the
text). Here the "tagger" learns from whole-image descriptions made of phrases ("a blue circle at the top left, a red
square at the bottom right and ..."), with no label per region: a small MLP maps each region's features
(:mod:`mmhelpers.regions`) to a vector, and it is aligned token-wise with the phrases of the descriptions as FILIP
(Yao et al. 2021) aligns image patches and words, each phrase with its best-matching region and each region with its
best-matching phrase, contrasted across a batch of images. A phrase is a fixed vector: the mean of a language
model's input embeddings of its content words (``phrase_vector``), so phrases that share words lie near each other.
Tagging is then a nearest neighbour over the training phrases.

    phrases = split_phrases("a blue circle at the top left, a red square at the top right and a green circle ...")
    tagger = fit_tagger(train_feats, train_descriptions, lambda p: phrase_vector(p, tok, lm.get_input_embeddings()))
    tagger.tag(feats)                      # [['a blue circle at the top left', ...], ...] in reading order
    write_phrases(tagger.tag(feats)[0])    # 'a blue circle at the top left, ... and a green circle at ...'

Measured on generated Sort-of-CLEVR scenes (their 800 training descriptions): see the README's assistant section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from tqdm.auto import tqdm

__all__ = [
    "STOP_WORDS",
    "split_phrases",
    "write_phrases",
    "phrase_vector",
    "phrase_recall",
    "RegionTagger",
    "fit_tagger",
]

STOP_WORDS = frozenset({"a", "an", "the", "at", "and", "of", "in", "on"})  # left out of a phrase's vector


def split_phrases(text: str) -> list[str]:
    """A description ``"p1, p2, ... and pn"`` -> its phrases (cut at commas and at ``" and "``), stripped."""
    out = [p.strip().rstrip(".") for part in text.split(",") for p in part.split(" and ")]
    return [p for p in out if p]


def write_phrases(phrases: Sequence[str]) -> str:
    """The inverse of :func:`split_phrases`: ``"p1, p2 and p3"`` ('' for none)."""
    phrases = list(phrases)
    return phrases[0] if len(phrases) == 1 else ", ".join(phrases[:-1]) + " and " + phrases[-1] if phrases else ""


def phrase_recall(tagged: Sequence[Sequence[str]], descriptions: Sequence[str]) -> float:
    """The share of the descriptions' phrases that the tags hold (as multisets, each image with its own)."""
    if len(tagged) != len(descriptions):
        raise ValueError(f"{len(tagged)} tagged images but {len(descriptions)} descriptions")
    right = total = 0
    for tags, text in zip(tagged, descriptions, strict=True):
        truth = split_phrases(text)
        right += sum((Counter(truth) & Counter(tags)).values())
        total += len(truth)
    return right / max(total, 1)


@torch.no_grad()
def phrase_vector(phrase: str, tokenizer, embedding: nn.Embedding) -> Tensor:
    """(d,) the mean of ``embedding``'s rows for the tokens of ``phrase``'s content words (:data:`STOP_WORDS` out)."""
    words = " ".join(w for w in phrase.lower().split() if w not in STOP_WORDS) or phrase
    ids = tokenizer(" " + words, add_special_tokens=False)["input_ids"]
    return embedding(torch.tensor(ids, device=embedding.weight.device)).float().mean(0).cpu()


class RegionTagger(nn.Module):
    """Region features (B, K, F), the last one presence -> unit vectors (B, K, d) near their phrases' vectors."""

    def __init__(self, phrases: Sequence[str], vectors: Tensor, mean: Tensor, std: Tensor, hidden: int = 256):
        super().__init__()
        in_dim = len(mean) + 1
        self.phrases = list(phrases)
        self.register_buffer("vectors", F.normalize(vectors.float(), dim=-1))  # (P, d)
        self.register_buffer("mean", mean.float())
        self.register_buffer("std", std.float())
        self.mlp = nn.Sequential(nn.Linear(in_dim, hidden), nn.GELU(), nn.Linear(hidden, vectors.shape[1]))
        self.register_buffer("threshold", torch.tensor(-1.0))  # set by fit_tagger: below it a region is not written
        # set by fit_tagger: an image whose share of regions at or above the threshold is below it gets no phrase
        self.register_buffer("coverage", torch.tensor(0.0))

    def forward(self, feats: Tensor) -> Tensor:
        x = torch.cat([(feats[..., :-1] - self.mean) / self.std, feats[..., -1:]], -1) * feats[..., -1:]
        return F.normalize(self.mlp(x), dim=-1)

    @torch.no_grad()
    def scores(self, feats: Tensor) -> Tensor:
        """(B, K, P) cosine of each region with each training phrase."""
        return self(feats.float()) @ self.vectors.T

    @torch.no_grad()
    def tag(self, feats: Tensor) -> list[list[str]]:
        """Each image's present regions whose best cosine reaches ``threshold``, as that phrase, in reading order
        (regions in the top half first, each half left to right; features 0 and 1 are x and y in [-1, 1]); none for
        an image where fewer than ``coverage`` of its regions reach it (an image unlike the training ones)."""
        best, which = self.scores(feats).max(-1)  # (B, K)
        present = feats[..., -1] > 0
        keep = present & (best >= self.threshold)
        share = keep.sum(-1) / present.sum(-1).clamp_min(1)
        keep &= (share >= self.coverage)[:, None]
        out = []
        for b in range(len(feats)):
            rows = sorted(keep[b].nonzero().flatten().tolist(), key=lambda k: (float(feats[b, k, 1]) >= 0,
                                                                                float(feats[b, k, 0])))  # fmt: skip
            out.append([self.phrases[int(which[b, k])] for k in rows])
        return out


def fit_tagger(feats: Tensor, descriptions: Sequence[str], vector: Callable[[str], Tensor], steps: int = 1000,
               batch_size: int = 64, lr: float = 1e-3, temperature: float = 0.05, seed: int = 0,
               quantile: float = 0.01, coverage: float = 0.0, progress: bool = True) -> RegionTagger:  # fmt: skip
    """Learn a :class:`RegionTagger` from images' region features (N, K, F) and one description each.

    FILIP's token-wise similarity between an image's regions and a description's phrases (the mean over phrases of
    their best region's cosine, and over present regions of their best phrase's), contrasted both ways across
    ``batch_size`` images per step. ``threshold`` becomes the ``quantile`` of the best cosine of the training
    regions, so a region unlike any seen in training (a photo's patch of sky, next to scenes) is left out; and an
    image gets no phrase at all when fewer than ``coverage`` of its regions reach it: a photo matches a few of its
    colour patches by chance, a scene like the training ones nearly all its regions (see ``AssistantConfig``).
    """
    if len(feats) != len(descriptions) or len(feats) < 2:
        raise ValueError(f"fit_tagger needs one description per image and two or more: {len(feats)} images, "
                         f"{len(descriptions)} descriptions")  # fmt: skip
    split = [split_phrases(d) for d in descriptions]
    if not all(split):
        raise ValueError(f"description {next(i for i, p in enumerate(split) if not p)} has no phrase")
    vocab = sorted({p for ps in split for p in ps})
    index = {p: i for i, p in enumerate(vocab)}
    vectors = torch.stack([vector(p) for p in vocab])
    present = feats[..., -1] > 0
    rows = feats[present][:, :-1]
    if len(rows) < 2:
        raise ValueError("fit_tagger: the images have fewer than two regions in all")
    torch.manual_seed(seed)
    tagger = RegionTagger(vocab, vectors, rows.mean(0), rows.std(0).clamp_min(1e-3))
    width = max(len(p) for p in split)
    phrase_ids = torch.tensor([[index[p] for p in ps] + [-1] * (width - len(ps)) for ps in split])  # (N, width)
    has = phrase_ids >= 0
    opt = torch.optim.AdamW(tagger.mlp.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    B = min(batch_size, len(feats))
    for _ in tqdm(range(steps), desc="region phrases", disable=not progress):
        pick = torch.randperm(len(feats), generator=gen)[:B]
        v = tagger(feats[pick])  # (B, K, d)
        t = tagger.vectors[phrase_ids[pick].clamp_min(0)]  # (B, width, d)
        s = torch.einsum("ikd,jpd->ijkp", v, t)  # (images, texts, regions, phrases)
        s = s.masked_fill(~present[pick][:, None, :, None], -2.0)
        t2i = (s.max(2).values * has[pick][None]).sum(-1) / has[pick].sum(-1)[None]  # each phrase's best region
        s = s.masked_fill(~has[pick][None, :, None, :], -2.0)
        p = present[pick]
        i2t = (s.max(3).values * p[:, None]).sum(-1) / p.sum(-1)[:, None].clamp_min(1)  # each region's best phrase
        logits, target = (t2i + i2t) / 2 / temperature, torch.arange(B)
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
    best = tagger.scores(feats).max(-1).values[present]
    tagger.threshold.fill_(float(torch.quantile(best, quantile)))
    tagger.coverage.fill_(coverage)
    return tagger.eval()
