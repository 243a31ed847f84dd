"""Image posts with text on them, built from captioned photos, and the policy that labels them.

Policy: a post is **flagged** when its text makes a claim the photo contradicts (misleading or out-of-context
content, as in NewsCLIPpings); **allowed** when the text describes the photo. Each photo carries
``captions_per_photo`` of its own captions (allowed) and as many captions of a partner photo (flagged). Partners
form one cycle over a split's photos (random negatives) or pairs of the most similar photos (hard negatives),
so every text is written once over a photo that allows it and once over one that flags it, and every photo
carries both kinds: a model that reads only the text, or only the photo, is at chance by construction (the
benign confounders of Hateful Memes). Splits are by photo: no photo, and so no text, in two splits.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from mmhelpers.image import resize
from mmhelpers.text_overlay import FONTS, POSITIONS, Overlay, TextStyle, render_text

ALLOWED, FLAGGED = 0, 1
LABELS = ("allowed", "flagged")
DIFFICULTIES = ("random", "hard")
SIZES = (0.06, 0.08, 0.10, 0.12)  # text height as a fraction of the post's shorter side
# a text colour with an outline that keeps it readable on any photo, or a plain one (harder to read)
INKS = (("white", "black"), ("black", "white"), ("yellow", "black"), ("red", "white"), ("white", None),
        ("black", None))  # fmt: skip


@dataclass(frozen=True)
class Post:
    """One post: a photo, the text written on it and how, and its label under the policy."""

    photo: int  # index into the photo list
    text: str
    text_of: int  # the photo the text is a caption of (== photo when allowed)
    label: int  # ALLOWED or FLAGGED
    style: TextStyle
    negatives: str = "none"  # for flagged posts: "random" or "hard"; allowed posts: "none"


@dataclass
class PostSet:
    """The posts of each split; ``posts(split, negatives)`` gives the allowed posts plus one kind of flagged ones."""

    splits: dict[str, np.ndarray]  # split -> photo indices
    allowed: dict[str, list[Post]]
    flagged: dict[str, dict[str, list[Post]]]  # split -> negatives -> posts
    partners: dict[str, dict[str, dict[int, int]]] = field(default_factory=dict)  # negatives -> split -> photo -> q

    def posts(self, split: str, negatives: str = "random") -> list[Post]:
        """The allowed posts of ``split`` followed by its flagged posts with ``negatives`` ("random" or "hard")."""
        if negatives not in DIFFICULTIES:
            raise ValueError(f"negatives must be one of {DIFFICULTIES}, got {negatives!r}")
        return self.allowed[split] + self.flagged[split][negatives]

    def all_posts(self) -> list[Post]:
        """Every distinct post (allowed ones once), in a fixed order: the set to render and extract features of."""
        out: list[Post] = []
        for split in self.splits:
            out += self.allowed[split]
            for negatives in DIFFICULTIES:
                out += self.flagged[split][negatives]
        return out


def split_photos(
    n: int, seed: int = 0, fractions: tuple[float, float, float] = (0.7, 0.1, 0.2)
) -> dict[str, np.ndarray]:
    """A seeded split of ``n`` photo indices into train, val and test (each at least one photo)."""
    if n < 3:
        raise ValueError(f"need at least 3 photos to split into train, val and test, got {n}")
    perm = np.random.default_rng(seed).permutation(n)
    n_val = max(1, round(fractions[1] * n))
    n_test = max(1, round(fractions[2] * n))
    n_train = n - n_val - n_test
    return {"train": np.sort(perm[:n_train]), "val": np.sort(perm[n_train : n_train + n_val]),
            "test": np.sort(perm[n_train + n_val :])}  # fmt: skip


def random_partners(photos: Sequence[int], rng: np.random.Generator) -> dict[int, int]:
    """Each photo -> another photo of ``photos``, one random cycle: every photo is some photo's partner once."""
    order = [int(p) for p in rng.permutation(np.asarray(photos))]
    if len(order) < 2:
        return {}
    return {p: order[(i + 1) % len(order)] for i, p in enumerate(order)}


def hard_partners(photos: Sequence[int], similarity: np.ndarray) -> dict[int, int]:
    """Each photo -> the most similar photo still free (greedy pairs of ``similarity[photos][:, photos]``, highest
    first); pairs swap their texts. With an odd count the last photo joins the last pair in a cycle of three."""
    photos = [int(p) for p in photos]
    if len(photos) < 2:
        return {}
    sim = np.asarray(similarity, dtype=np.float64)[np.ix_(photos, photos)].copy()
    np.fill_diagonal(sim, -np.inf)
    order = np.dstack(np.unravel_index(np.argsort(-sim, axis=None, kind="stable"), sim.shape))[0]
    free, pairs = set(range(len(photos))), []
    for i, j in order:
        if i < j and i in free and j in free:
            pairs.append((int(i), int(j)))
            free -= {i, j}
    partner = {}
    for i, j in pairs:
        partner[photos[i]], partner[photos[j]] = photos[j], photos[i]
    if free:  # one photo left: a -> b -> r -> a with the last pair (a, b)
        (r,) = free
        a, b = pairs[-1]
        partner[photos[a]], partner[photos[b]], partner[photos[r]] = photos[b], photos[r], photos[a]
    return partner


def sample_style(rng: np.random.Generator, fonts: Sequence[str] = tuple(FONTS)) -> TextStyle:
    """A random style: font, size, ink (colour and outline), position and one or two lines."""
    colour, outline = INKS[rng.integers(len(INKS))]
    return TextStyle(font=str(fonts[rng.integers(len(fonts))]), size=float(SIZES[rng.integers(len(SIZES))]),
                     colour=colour, outline=outline, position=str(POSITIONS[rng.integers(len(POSITIONS))]),
                     lines=int(rng.integers(1, 3)))  # fmt: skip


def make_posts(
    captions: Sequence[Sequence[str]],
    similarity: np.ndarray | None = None,
    *,
    captions_per_photo: int = 2,
    seed: int = 0,
    splits: dict[str, np.ndarray] | None = None,
    fonts: Sequence[str] = tuple(FONTS),
) -> PostSet:
    """The posts of photos with ``captions`` (a list per photo), deterministic from ``seed``.

    ``similarity`` (photos x photos, e.g. cosine of their captions' MiniLM embeddings) picks the hard negatives;
    without it the hard set is the random one. Each photo uses its first ``captions_per_photo`` captions.
    """
    n = len(captions)
    if any(len(c) < captions_per_photo for c in captions):
        short = next(i for i, c in enumerate(captions) if len(c) < captions_per_photo)
        raise ValueError(f"photo {short} has {len(captions[short])} captions, fewer than captions_per_photo="
                         f"{captions_per_photo}")  # fmt: skip
    splits = splits if splits is not None else split_photos(n, seed)
    rng = np.random.default_rng(seed)
    text = {p: [" ".join(str(c).split()) for c in captions[p][:captions_per_photo]] for p in range(n)}
    post_set = PostSet(splits={k: np.asarray(v) for k, v in splits.items()}, allowed={}, flagged={})
    for negatives in DIFFICULTIES:
        post_set.partners[negatives] = {}
    for split, photos in splits.items():
        post_set.allowed[split] = [Post(int(p), t, int(p), ALLOWED, sample_style(rng, fonts))
                                   for p in photos for t in text[int(p)]]  # fmt: skip
        post_set.flagged[split] = {}
        for negatives in DIFFICULTIES:
            if negatives == "hard" and similarity is not None:
                partner = hard_partners(photos, similarity)
            else:
                partner = random_partners(photos, rng)
            post_set.partners[negatives][split] = partner
            post_set.flagged[split][negatives] = [
                Post(p, t, q, FLAGGED, sample_style(rng, fonts), negatives)
                for p, q in sorted(partner.items()) for t in text[q]
            ]  # fmt: skip
    return post_set


def post_canvas(photo: np.ndarray, size: int = 384) -> np.ndarray:
    """The photo scaled so that its shorter side is ``size`` pixels: the post's canvas (Flickr8k's thumbnails are
    about 200 pixels, too small for legible text)."""
    h, w = photo.shape[:2]
    f = size / min(h, w)
    return resize(photo, (round(h * f), round(w * f)))


def render_post(photo: np.ndarray, post: Post, size: int = 384) -> Overlay:
    """The post's picture: its photo at ``size`` pixels on the shorter side with its text written on it."""
    return render_text(post_canvas(photo, size), post.text, post.style)
