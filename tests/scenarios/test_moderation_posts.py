"""The post generator: deterministic, split by photo, with benign confounders (every text both allowed and flagged,
every photo carrying both), and hard negatives that are the most similar photos."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from mmhelpers.scenarios.moderation.posts import (
    ALLOWED,
    FLAGGED,
    hard_partners,
    make_posts,
    random_partners,
    render_post,
    split_photos,
)


def captions(n: int, k: int = 3) -> list[list[str]]:
    return [[f"photo {i} caption {j}" for j in range(k)] for i in range(n)]


def test_same_seed_same_posts_other_seed_other_posts():
    a, b, c = (make_posts(captions(30), seed=s) for s in (0, 0, 1))
    assert a.all_posts() == b.all_posts()
    assert a.all_posts() != c.all_posts()


def test_splits_are_by_photo_and_share_no_text():
    ps = make_posts(captions(40), captions_per_photo=2, seed=3)
    photos = {s: set(map(int, v)) for s, v in ps.splits.items()}
    assert not (photos["train"] & photos["val"]) and not (photos["train"] & photos["test"])
    assert not (photos["val"] & photos["test"]) and set.union(*photos.values()) == set(range(40))
    for split in ps.splits:
        for neg in ("random", "hard"):
            posts = ps.posts(split, neg)
            assert {p.photo for p in posts} | {p.text_of for p in posts} <= photos[split]
    texts = {s: {p.text for p in ps.posts(s, "random")} for s in ps.splits}
    assert not (texts["train"] & texts["test"]) and not (texts["train"] & texts["val"])


@pytest.mark.parametrize("n", [31, 40])  # odd counts close the pairs with a cycle of three
@pytest.mark.parametrize("negatives", ["random", "hard"])
def test_confounders_every_text_both_ways_every_photo_both_kinds(n: int, negatives: str):
    sim = np.random.default_rng(0).random((n, n))
    ps = make_posts(captions(n), (sim + sim.T) / 2, captions_per_photo=2, seed=0)
    for split in ps.splits:
        posts = ps.posts(split, negatives)
        by_text = Counter((p.text, p.label) for p in posts)
        assert all(by_text[(t, ALLOWED)] == 1 and by_text[(t, FLAGGED)] == 1 for t, _ in by_text)
        by_photo = Counter((p.photo, p.label) for p in posts)
        assert all(by_photo[(ph, ALLOWED)] == 2 and by_photo[(ph, FLAGGED)] == 2 for ph, _ in by_photo)
        assert all((p.text_of == p.photo) == (p.label == ALLOWED) for p in posts)
        assert sum(p.label for p in posts) * 2 == len(posts)  # balanced: chance is 50%


def test_random_partners_form_one_derangement():
    partner = random_partners(list(range(10, 20)), np.random.default_rng(0))
    assert sorted(partner) == sorted(partner.values()) == list(range(10, 20))
    assert all(p != q for p, q in partner.items())


def test_hard_partners_pick_the_most_similar_photos():
    # photos 0-1, 2-3, 4-5 are near twins; 6 is odd one out
    sim = np.eye(7)
    for a, b in ((0, 1), (2, 3), (4, 5)):
        sim[a, b] = sim[b, a] = 0.9
    sim[6, 5] = sim[5, 6] = 0.5
    partner = hard_partners(range(7), sim)
    assert partner[0] == 1 and partner[1] == 0 and partner[2] == 3 and partner[3] == 2
    assert sorted(partner.values()) == list(range(7)) and all(p != q for p, q in partner.items())


def test_split_sizes_and_refusals():
    s = split_photos(1000, seed=0)
    assert {k: len(v) for k, v in s.items()} == {"train": 700, "val": 100, "test": 200}
    assert {k: len(v) for k, v in split_photos(16).items()} == {"train": 11, "val": 2, "test": 3}
    with pytest.raises(ValueError, match="at least 3 photos"):
        split_photos(2)
    with pytest.raises(ValueError, match="photo 1 has 1 captions"):
        make_posts([["a", "b"], ["c"], ["d", "e"]], captions_per_photo=2)


def test_render_post_scales_the_photo_and_writes_the_text():
    ps = make_posts(captions(10), seed=0)
    post = ps.posts("train")[0]
    photo = np.full((150, 200, 3), 90, np.uint8)
    out = render_post(photo, post, size=384)
    assert out.image.shape == (384, 512, 3)
    x0, y0, x1, y1 = out.box
    assert 0 <= x0 < x1 <= 512 and 0 <= y0 < y1 <= 384 and (out.image != 90).any()
