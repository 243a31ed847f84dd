"""The five notebooks of scenario 05 (moderating image posts with text in them) with their smoke settings on the
embedded photos, notebook 03 on 120 real Flickr8k photos, and notebooks 01 and 03 on a user's folder of posts. The notebooks share one cache for the
module (features, OCR readings, checkpoints), as in a session.

The embedded set has 8 training photos: nothing learns from so few, and the assertions there are on the data's
construction (confounders, splits), the caches, and the training-free zero-shot score. The real-data test asserts
the scenario's claim with thresholds an untrained model fails: the unimodal heads stay near chance and the
image-text alignment flags random negatives far better.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from notebook_runs import scenario_runner

pytestmark = [pytest.mark.notebook, pytest.mark.usefixtures("module_cache")]
run = scenario_runner("05_content_moderation")


def test_moderation_representation(tmp_path: Path):
    m = run("01_representation", tmp_path)
    assert m["n_posts"] == 16 * 3 * 3  # 16 photos x 3 captions x (allowed, random flagged, hard flagged)
    assert all(all(c.values()) for c in m["confounders"].values()), m["confounders"]
    assert m["photo_overlap"] == 0
    assert m["counts"]["test"]["hard"] == {"posts": 36, "flagged": 18}  # 6 test photos, balanced
    assert min(m["picture_shape"][:2]) == 384 and m["picture_tensor_shape"] == [1, 3, 224, 224]
    assert len(m["fonts"]) == 6 and m["n_text_tokens"] > 3


def test_moderation_features_fusion_training_evaluation(tmp_path: Path):
    fx = run("02_feature_extraction", tmp_path / "02")
    assert fx["ocr_cache_identical"] and fx["picture_cache_identical"]
    assert fx["grid_shape"] == [144, 9, 1280] and fx["text_shape"] == [144, 384]
    assert fx["ocr"]["n"] == 24 and len(fx["ocr"]["by_font"]) >= 3  # error rates by font, for the fonts drawn
    assert fx["score_auroc"]["zero-shot/random"] > 0.65  # ConSE, no training: a constant or random score is ~0.5
    assert 0.5 < fx["cosine_post_vs_masked"] < 0.999  # the text moves the picture's embedding, a little

    fu = run("03_fusion", tmp_path / "03")
    assert max(fu["unimodal_auroc"].values()) < 0.7  # the confounders: one modality cannot decide (36 test posts)
    assert fu["best_auroc"]["random"] > 0.65
    assert fu["parameters"]["aligned"] < fu["parameters"]["concat"]

    tr = run("04_training", tmp_path / "04")
    assert all(tr["loss_drop"].values())
    assert set(tr["strategies"]["aligned"]) == {"random only", "hard only", "both", "mined (2 rounds)"}
    assert set(tr["augmentation"]["aligned"]) == {"with", "without"}

    ev = run("05_evaluation", tmp_path / "05")
    assert ev["gain_over_unimodal"]["random"] > 0.1
    assert set(ev["ocr"]["by_set"]) == {"random", "hard"} and 0 <= ev["ocr"]["cer"]
    assert 0 <= ev["calibration"]["ece_after"] <= 1 and ev["calibration"]["temperature"] > 0
    assert "results_json" not in ev  # smoke runs never write the committed results file


@pytest.mark.mirror
def test_moderation_real_photos(tmp_path: Path, real_mirror: Path):
    """Fusion on the first 120 Flickr8k photos (720 posts; 24 test photos, 96 posts per set)."""
    fu = run("03_fusion", tmp_path / "03", DATA="real", N_PHOTOS=120)
    assert max(fu["unimodal_auroc"].values()) < 0.62  # chance by construction
    assert fu["methods"]["similarity"]["random"]["auroc"] > 0.72  # the aligner trained on 84 photos: ~0.82; chance 0.5
    assert fu["best_auroc"]["random"] > max(fu["unimodal_auroc"].values()) + 0.2


@pytest.fixture(scope="module")
def post_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userdata import write_post_folder

    return write_post_folder(tmp_path_factory.mktemp("user") / "my_posts")


def test_moderation_own_folder(tmp_path: Path, post_folder: Path):
    """A user's folder of posts (metadata.csv: file_name, label, text, group): one evaluation set, "all"."""
    rep = run("01_representation", tmp_path / "01", DATA=str(post_folder))
    assert rep["n_posts"] == 144 and rep["summary"]["sets"] == ["all"] and rep["summary"]["texts_given"] == 144
    fu = run("03_fusion", tmp_path / "03", DATA=str(post_folder))
    assert set(fu["methods"]["similarity"]) == {"all"}
    assert fu["best_auroc"]["all"] > 0.7 and fu["best_auroc"]["all"] > fu["unimodal_auroc"]["all"] + 0.1
