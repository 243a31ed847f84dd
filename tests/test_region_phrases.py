"""Region phrases: learned from whole-scene descriptions, with no label per region, then written back as text."""

import zlib

import cv2
import numpy as np
import pytest
import torch

from mmhelpers.data.sort_of_clevr import describe_scene, make_scenes, render_scene
from mmhelpers.region_phrases import fit_tagger, phrase_recall, split_phrases, write_phrases
from mmhelpers.regions import image_region_features


def _word_vectors(phrase: str, dim: int = 32) -> torch.Tensor:
    """A phrase as the mean of fixed random word vectors (what a language model's embedding table gives)."""
    words = [w for w in phrase.split() if w not in {"a", "an", "at", "the"}]
    rows = [torch.from_numpy(np.random.default_rng(zlib.crc32(w.encode())).standard_normal(dim)) for w in words]
    return torch.stack(rows).float().mean(0)


@pytest.fixture(scope="module")
def scenes():
    scenes = make_scenes(460, seed=11)
    return scenes, image_region_features([render_scene(s) for s in scenes], 64, 10)


def _objects_right(tagger, scenes, feats) -> float:
    return phrase_recall(tagger.tag(feats), [describe_scene(s) for s in scenes])


def test_split_and_write_are_inverse():
    text = "a blue circle at the top left, a red square at the top right and a green circle at the bottom left"
    assert split_phrases(text) == ["a blue circle at the top left", "a red square at the top right",
                                   "a green circle at the bottom left"]  # fmt: skip
    assert write_phrases(split_phrases(text)) == text
    assert write_phrases(["one"]) == "one" and write_phrases([]) == "" and split_phrases("") == []
    assert phrase_recall([["a red square", "a red square"]], ["a red square and a blue circle"]) == 0.5


def test_tagger_learns_each_objects_phrase_from_scene_descriptions_alone(scenes):
    scenes, feats = scenes
    texts = [describe_scene(s) for s in scenes[:400]]
    untrained = fit_tagger(feats[:400], texts, _word_vectors, steps=0, progress=False)
    tagger = fit_tagger(feats[:400], texts, _word_vectors, steps=400, progress=False)
    assert len(tagger.phrases) == 48  # 6 colours x 2 shapes x 4 quarters
    assert _objects_right(untrained, scenes[400:], feats[400:]) < 0.3
    right = _objects_right(tagger, scenes[400:], feats[400:])
    assert right > 0.85, right
    tags = tagger.tag(feats[400:401])[0]  # written in reading order: the top half first, each half left to right
    assert [t.endswith(("top left", "top right")) for t in tags] == sorted(
        [t.endswith(("top left", "top right")) for t in tags], reverse=True
    )


def test_an_image_unlike_the_training_scenes_gets_no_phrase_though_some_regions_match(scenes):
    scenes, feats = scenes
    rng = np.random.default_rng(0)
    mixed = []  # held-out scenes whose lower half is a patchwork of colours: the upper half's objects still match
    for s in scenes[400:]:
        img = render_scene(s)
        img[32:] = cv2.resize(
            rng.integers(0, 256, (4, 8, 3), dtype=np.uint8), (64, 32), interpolation=cv2.INTER_NEAREST
        )
        mixed.append(img)
    mixed = image_region_features(mixed, 64, 10)
    tagger = fit_tagger(feats[:400], [describe_scene(s) for s in scenes[:400]], _word_vectors, steps=400,
                        coverage=0.75, progress=False)  # fmt: skip
    assert float(tagger.coverage) == 0.75
    assert sum(map(bool, tagger.tag(mixed))) <= 5  # of 60
    assert all(tagger.tag(feats[400:]))  # every held-out scene still gets its phrases
    tagger.coverage.fill_(0.0)  # every matched region written: the patchwork images get phrases too
    assert sum(map(bool, tagger.tag(mixed))) >= 50


def test_a_blank_image_gets_no_phrase_and_bad_input_is_named(scenes):
    scenes, feats = scenes
    tagger = fit_tagger(feats[:100], [describe_scene(s) for s in scenes[:100]], _word_vectors, steps=50,
                        progress=False)  # fmt: skip
    blank = image_region_features([np.full((64, 64, 3), 200, np.uint8)], 64, 10)
    assert tagger.tag(blank) == [[]]
    with pytest.raises(ValueError, match="one description per image"):
        fit_tagger(feats[:3], ["a red circle at the top left"], _word_vectors, steps=1, progress=False)
    with pytest.raises(ValueError, match="description 1 has no phrase"):
        fit_tagger(feats[:2], ["a red circle at the top left", ""], _word_vectors, steps=1, progress=False)
