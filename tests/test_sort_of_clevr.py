"""Tests for mmhelpers.data.sort_of_clevr: determinism, rendering, answers recomputed from geometry, vocabulary."""

from __future__ import annotations

import math
import re
from collections import Counter

import numpy as np
import pytest
import torch

from mmhelpers.data import sort_of_clevr as soc


@pytest.fixture(scope="module")
def vqa() -> soc.VQASet:
    return soc.build_vqa_set(300, seed=7)


def test_shapes_and_types(vqa: soc.VQASet) -> None:
    assert vqa.images.shape == (300, 3, 64, 64) and vqa.images.dtype == torch.uint8
    assert vqa.questions.shape == (300, 36, soc.QUESTION_LEN) and vqa.questions.dtype == torch.long
    assert vqa.answers.shape == (300, 36) and vqa.answers.dtype == torch.long
    assert vqa.qtypes == [t for t in soc.QTYPES for _ in soc.COLORS] and len(vqa) == 300
    assert vqa.vocab == soc.VQA_VOCAB


def test_same_seed_same_data_and_prefix_property() -> None:
    a, b = soc.build_vqa_set(12, seed=3), soc.build_vqa_set(12, seed=3)
    assert torch.equal(a.images, b.images) and torch.equal(a.answers, b.answers)
    assert torch.equal(a.questions, b.questions) and a.scenes == b.scenes
    assert soc.make_scenes(20, seed=3)[:12] == a.scenes
    assert soc.make_scenes(12, seed=4) != a.scenes


def test_one_object_per_colour_inside_the_image(vqa: soc.VQASet) -> None:
    r = soc.object_radius(64)
    for scene in vqa.scenes:
        assert [o[0] for o in scene.objects] == list(soc.COLORS)
        assert all(o[1] in soc.SHAPES for o in scene.objects)
        assert all(r <= o[2] < 64 - r and r <= o[3] < 64 - r for o in scene.objects)


def test_objects_do_not_overlap(vqa: soc.VQASet) -> None:
    r = soc.object_radius(64)
    for scene in vqa.scenes[:50]:
        for i, a in enumerate(scene.objects):
            for b in scene.objects[i + 1 :]:
                assert max(abs(a[2] - b[2]), abs(a[3] - b[3])) > 2 * r  # bounding boxes disjoint
    # Pixel counts: every object keeps all the pixels it has when drawn alone.
    area = {s: int((soc.render_scene(soc.Scene([("red", s, 32.0, 32.0)])) != 255).any(-1).sum()) for s in soc.SHAPES}
    for k, scene in enumerate(vqa.scenes[:50]):
        img = vqa.images[k].permute(1, 2, 0).numpy()
        for color, shape, _, _ in scene.objects:
            assert (img == soc.RGB[color]).all(-1).sum() == area[shape], (k, color)


def test_pixels_show_colour_and_shape(vqa: soc.VQASet) -> None:
    r = soc.object_radius(64)
    for k, scene in enumerate(vqa.scenes[:50]):
        img = vqa.images[k].permute(1, 2, 0).numpy()
        for color, shape, cx, cy in scene.objects:
            x, y = int(cx), int(cy)
            assert tuple(img[y, x]) == soc.RGB[color]
            corner = tuple(img[y + r, x + r])  # inside a square, outside a circle
            assert corner == (soc.RGB[color] if shape == "square" else soc.BACKGROUND)
    assert tuple(vqa.images[0, :, 0, 0].tolist()) == soc.BACKGROUND


def _expected(scene: soc.Scene, text: str) -> str:
    """The answer recomputed from the question text and the object geometry alone."""
    color = next(c for c in soc.COLORS if re.search(rf"\b{c}\b", text))
    me = next(o for o in scene.objects if o[0] == color)
    others = [o for o in scene.objects if o is not me]
    # Pixel (x, y) covers [x, x + 1); its centre x + 0.5 is compared with the image centre size / 2.
    if re.fullmatch(r"what is the shape of the object that is \w+", text):
        return me[1]
    if "left or right" in text:
        return "left" if me[2] + 0.5 < scene.size / 2 else "right"
    if "top or bottom" in text:
        return "top" if me[3] + 0.5 < scene.size / 2 else "bottom"
    dists = [math.dist(me[2:], o[2:]) for o in others]
    if "closest" in text:
        return others[dists.index(min(dists))][0]
    if "furthest" in text:
        return others[dists.index(max(dists))][1]
    assert text.startswith("how many")
    return str(sum(o[1] == me[1] for o in scene.objects))


def test_every_answer_matches_the_geometry(vqa: soc.VQASet) -> None:
    for k, scene in enumerate(vqa.scenes):
        questions = soc.questions_for(scene)
        assert len(questions) == 36
        for j, q in enumerate(questions):
            assert q.answer == _expected(scene, q.text), (k, q)
            assert q.relational == (q.qtype in {"closest_color", "furthest_shape", "count"})
            assert vqa.qtypes[j] == q.qtype and soc.VQA_VOCAB[vqa.answers[k, j]] == q.answer
            assert soc.decode_ids(vqa.questions[k, j]) == q.text


def test_closest_and_furthest_are_never_ties(vqa: soc.VQASet) -> None:
    for scene in vqa.scenes:
        for me in scene.objects:
            d = sorted(math.dist(me[2:], o[2:]) for o in scene.objects if o is not me)
            assert d[0] < d[1] and d[-2] < d[-1]


def test_answer_distribution_is_balanced(vqa: soc.VQASet) -> None:
    words = {t: Counter(soc.VQA_VOCAB[i] for i in vqa.answers[:, 6 * k : 6 * k + 6].flatten().tolist())
             for k, t in enumerate(soc.QTYPES)}  # fmt: skip
    n = 300 * 6
    assert 0.45 < words["shape"]["circle"] / n < 0.55
    assert 0.42 < words["horizontal"]["left"] / n < 0.58 and 0.42 < words["vertical"]["top"] / n < 0.58
    assert set(words["closest_color"]) == set(soc.COLORS)
    assert set(words["furthest_shape"]) == set(soc.SHAPES)
    assert set(words["count"]) <= {"1", "2", "3", "4", "5", "6"} and len(words["count"]) >= 5
    assert words["count"].most_common(1)[0][0] in {"3", "4"}  # Binomial(5, 1/2) + 1


def test_vocab_round_trip_and_padding(vqa: soc.VQASet) -> None:
    assert soc.VQA_VOCAB[:3] == ("<pad>", "<bos>", "<eos>") and len(set(soc.VQA_VOCAB)) == len(soc.VQA_VOCAB)
    assert set(soc.ANSWER_WORDS) <= set(soc.VQA_VOCAB)
    for q in soc.questions_for(vqa.scenes[0]):
        ids = soc.encode_words(q.text, soc.QUESTION_LEN)
        assert len(ids) == soc.QUESTION_LEN and soc.decode_ids(ids) == q.text
    assert soc.decode_ids([soc.BOS_ID, *soc.encode_words("red square"), soc.EOS_ID, *soc.encode_words("left")]) == (
        "red square"
    )
    nonpad = (vqa.questions != soc.PAD_ID).sum(-1)  # (n, 36)
    lengths = torch.tensor([len(q.text.split()) for q in soc.questions_for(vqa.scenes[0])])
    assert torch.equal(nonpad, lengths.expand_as(nonpad)) and int(lengths.max()) == soc.QUESTION_LEN
    positions = torch.arange(soc.QUESTION_LEN)
    assert torch.equal(vqa.questions != soc.PAD_ID, positions >= soc.QUESTION_LEN - nonpad[..., None])  # left-padded
    colour_ids = torch.tensor([soc.VQA_VOCAB.index(c) for c in soc.COLORS])
    assert torch.isin(vqa.questions[..., -1], colour_ids).all()  # the named colour: always the last token
    assert soc.left_pad([5, 6], 4) == [soc.PAD_ID, soc.PAD_ID, 5, 6]
    with pytest.raises(ValueError, match="not in VQA_VOCAB"):
        soc.encode_words("what is purple")
    with pytest.raises(ValueError, match="more than length"):
        soc.encode_words("what is the shape of the object that is red", 3)


def test_scene_captions_are_true_varied_and_deterministic(vqa: soc.VQASet) -> None:
    seen = set()
    for scene in vqa.scenes[:40]:
        caps = soc.scene_captions(scene, n=3)
        assert caps == soc.scene_captions(scene, n=3) and len(set(caps)) == 3
        present = {f"{c} {s}" for c, s, _, _ in scene.objects}
        for cap in caps:
            seen.add(cap)
            named = re.findall(rf"\b(?:{'|'.join(soc.COLORS)}) (?:circle|square)\b", cap)
            assert set(named) <= present, (cap, present)
            m = re.search(r"(\w+) circles? and (\w+) squares?", cap)
            if m:
                k = sum(o[1] == "circle" for o in scene.objects)
                assert (m.group(1), m.group(2)) == (soc._NUMBERS[k], soc._NUMBERS[6 - k])
    assert len(seen) > 90  # count captions repeat across scenes
    assert soc.scene_captions(vqa.scenes[0], n=3, seed=1) != soc.scene_captions(vqa.scenes[0], n=3, seed=0)


def test_a_scene_description_names_every_object_where_its_questions_place_it(vqa: soc.VQASet) -> None:
    colors = "|".join(soc.COLORS)
    for scene in vqa.scenes[:40]:
        text = soc.describe_scene(scene)
        found = re.findall(rf"\ban? ({colors}) (circle|square) at the (top|bottom) (left|right)\b", text)
        assert len(found) == 6 and {c for c, *_ in found} == set(soc.COLORS), text
        answer = {(q.qtype, q.color): q.answer for q in soc.questions_for(scene)}
        for color, *words in found:  # the words the non-relational questions answer with
            assert [answer[t, color] for t in ("shape", "vertical", "horizontal")] == words, text
        rows = [row for _, _, row, _ in found]
        assert rows == sorted(rows, key=("top", "bottom").index), text  # the top half is read first
    assert soc.describe_scene(vqa.scenes[0]) == soc.describe_scene(vqa.scenes[0])


def test_render_is_uint8_rgb_and_size_follows_the_scene() -> None:
    scene = soc.make_scenes(1, seed=0, size=96)[0]
    img = soc.render_scene(scene)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    with pytest.raises(ValueError, match="too small"):
        soc.make_scenes(1, seed=0, size=16)


def test_antialiased_render_keeps_every_object_in_place_with_soft_edges() -> None:
    r = soc.object_radius(64)
    for scene in soc.make_scenes(10, seed=5):
        crisp, smooth = soc.render_scene(scene), soc.render_scene(scene, antialias=True)
        assert smooth.shape == crisp.shape and smooth.dtype == np.uint8
        palette = {soc.BACKGROUND, *soc.RGB.values()}
        assert {tuple(p) for p in crisp.reshape(-1, 3)} <= palette
        assert len({tuple(p) for p in smooth.reshape(-1, 3)} - palette) > 6  # mixed colours at the edges
        for _, _, cx, cy in scene.objects:  # ink centre: exact when crisp, a quarter pixel down-right when smooth
            x0, y0, w = int(cx) - r, int(cy) - r, 2 * r + 2  # the smooth object reaches one pixel further
            for img, shift in ((crisp, 0.0), (smooth, 0.25)):  # (neighbours are at least 2 pixels away)
                ink = (255 - img[y0 : y0 + w, x0 : x0 + w].astype(float)).sum(-1)
                ys, xs = np.mgrid[y0 : y0 + w, x0 : x0 + w]
                centre = ((ink * xs).sum() / ink.sum(), (ink * ys).sum() / ink.sum())
                assert centre == pytest.approx((cx + shift, cy + shift), abs=0.1)
    images = soc.render_images(soc.make_scenes(3, seed=5), antialias=True)
    assert images.shape == (3, 3, 64, 64) and images.dtype == torch.uint8
