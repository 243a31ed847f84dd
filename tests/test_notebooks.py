"""Every notebook runs top to bottom in a fresh kernel with its smoke parameters, and its key figures are right.

Thresholds are set so that a broken or untrained model fails them (see each assertion's comment).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from mmhelpers.run_notebooks import NOTEBOOK_DIR, check_executed, discover, execute

pytestmark = pytest.mark.notebook
NOTEBOOKS = discover()


def run(name: str, tmp_path: Path, **params: object) -> dict:
    """Execute a notebook with its smoke settings; ``name`` is "scenario/stem" (or a stem no other scenario has)."""
    (path,) = [p for p in NOTEBOOKS if f"{p.parent.name}/{p.stem}".endswith(name)]
    return execute(
        path, {"SMOKE": True, **params}, out_dir=tmp_path / "executed", metrics_json=tmp_path / "metrics.json"
    )


def test_notebooks_are_found_and_numbered():
    assert len(NOTEBOOKS) >= 2
    for p in NOTEBOOKS:
        rel = p.relative_to(NOTEBOOK_DIR)
        assert all(part[:2].isdigit() and part[2] == "_" for part in rel.parts), f"{rel} is not numbered NN_name"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_structure(path: Path):
    nb = nbformat.read(path, as_version=4)
    params = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1, "exactly one cell tagged 'parameters' (papermill injects after it)"
    for name in ("SMOKE", "SEED", "DEVICE", "METRICS_JSON"):
        assert f"\n{name} =" in "\n" + params[0].source, f"parameters cell lacks {name}"
    code = "\n".join(c.source for c in nb.cells if c.cell_type == "code")
    assert "from mmhelpers" in code, "notebooks import their machinery from mmhelpers"
    assert "save_metrics(" in code, "notebooks write their key figures"
    assert not any(c.get("outputs") for c in nb.cells if c.cell_type == "code"), "commit notebooks without outputs"


def test_check_executed_rejects_a_notebook_that_ran_nothing(tmp_path: Path):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("x = 1"), nbformat.v4.new_code_cell("y = 2")])
    nb.cells[0].execution_count = 1
    with pytest.raises(RuntimeError, match="not executed"):
        check_executed(nb, tmp_path / "x.ipynb")
    with pytest.raises(RuntimeError, match="no code cells"):
        check_executed(nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# hi")]), tmp_path / "y.ipynb")


def test_attention_from_scratch(tmp_path: Path):
    m = run("01_attention_from_scratch", tmp_path)
    # every from-scratch piece agrees with PyTorch to 1e-5
    assert set(m["max_abs_error"]) >= {"sdpa", "sdpa_causal", "mha", "positional_encoding", "encoder_post_norm",
                                       "encoder_pre_norm", "decoder", "cross_modal"}  # fmt: skip
    assert m["max_abs_error_overall"] < 1e-5, m["max_abs_error"]
    # causality: the future cannot change the past, but does change the present
    assert m["causal_past_change"] < 1e-6 and m["causal_future_change"] > 0.1
    # the copy task needs attention: untrained is near chance (0.1), trained nearly perfect
    assert m["copy_accuracy_untrained"] < 0.2
    assert m["copy_accuracy"] > 0.9
    assert m["copy_lookback_attention"] > 0.3  # the last layer attends to the token it must copy


def test_tensors_and_features_embedded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.delenv("MMHELPERS_MIRROR", raising=False)  # embedded defaults need no mirror
    m = run("02_tensors_and_features", tmp_path, DATA="embedded")
    assert m["data"] == "embedded"
    assert m["logmel_librosa_max_abs_db"] < 0.01 and m["mfcc_librosa_max_abs"] < 0.01
    assert m["cache_batches_recomputed"] == 0 and m["cache_identical"]
    assert m["cat_photo_top1"] == 285  # pretrained EfficientNet-Lite0 sees an Egyptian cat; random weights do not
    assert m["caption_same_image_top1"] > 0.5 > 10 * m["caption_same_image_chance"]  # pretrained MiniLM
    assert m["audio_probe_accuracy"] > 0.6 and m["pixel_probe_accuracy"] > 0.85  # chance is 0.1


@pytest.mark.mirror
def test_tensors_and_features_real_data(tmp_path: Path, real_mirror: Path):
    m = run("02_tensors_and_features", tmp_path, DATA="real", N_PHOTOS=24)
    assert m["data"] == "real" and m["n_clips"] == 400 and m["n_digit_images"] == 10000 and m["n_photos"] == 24
    assert m["logmel_librosa_max_abs_db"] < 0.01 and m["mfcc_librosa_max_abs"] < 0.01
    assert m["caption_same_image_top1"] > 10 * m["caption_same_image_chance"]
    assert m["audio_probe_accuracy"] > 0.3  # real speech, 300 training clips, mean log-mel only: far above 0.1
    assert m["pixel_probe_accuracy"] > 0.85


def test_tensors_and_features_own_folder(tmp_path: Path):
    """A user's folder: 8 classes of tones at 16 kHz with a speaker column, 8 classes of letters (grey, colour and
    RGBA images of many sizes) in class subfolders, and captioned photos (tests/userdata.py)."""
    from userdata import write_av_folder, write_caption_folder

    folder = write_av_folder(tmp_path / "mine", 8, 16000, clips_per_class_speaker=4, images_per_class=20)
    write_caption_folder(folder / "photos")
    m = run("02_tensors_and_features", tmp_path, DATA=str(folder))
    assert m["n_clips"] == 8 * 3 * 4 and m["n_digit_images"] == 8 * 20 and m["n_photos"] == 72
    assert m["logmel_librosa_max_abs_db"] < 0.01 and m["mfcc_librosa_max_abs"] < 0.01  # at 16 kHz too
    assert m["cache_batches_recomputed"] == 0 and m["cache_identical"]
    assert m["caption_same_image_top1"] > 3 * m["caption_same_image_chance"]
    # 8 classes, chance 0.125; raw pixels of letters at random places and scales: ~0.48 with 15 training images each
    assert m["audio_probe_accuracy"] > 0.6 and m["pixel_probe_accuracy"] > 0.3


# ---------------------------------------------------------------- 01 audio-visual digits (embedded data, smoke)
# Smoke training is a few epochs on generated clips and scikit-learn digits: the thresholds sit far above
# chance (0.1) and far below what a full run reaches, so an untrained or broken model fails them.
AV_SPEAKERS = ["synth0", "synth1"]


@pytest.fixture(scope="module")
def _av_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("av_cache")


@pytest.fixture
def av_cache(_av_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One feature and checkpoint cache for the scenario's notebook tests: notebooks resume ("latest") what an
    earlier one trained with the same configuration and data, so no smoke model is trained twice."""
    monkeypatch.setenv("MMHELPERS_CACHE", str(_av_cache))
    return _av_cache


@pytest.mark.usefixtures("av_cache")
def test_av_representation(tmp_path: Path):
    m = run("01_av_digits/01_representation", tmp_path, DATA="embedded")
    assert m["n_clips"] == 1000 and m["n_speakers"] == 4 and m["audio_shape"] == [40, 81]
    assert m["logmel_librosa_max_abs_db"] < 0.01
    assert m["cmvn_mean_abs"] < 1e-4 and abs(m["cmvn_std"] - 1) < 1e-3
    assert m["pairing_correct"] == 1.0 and m["test_pairs_from_test_pool"] and m["train_test_overlap"] == 0


@pytest.mark.usefixtures("av_cache")
def test_av_feature_extraction(tmp_path: Path):
    m = run("01_av_digits/02_feature_extraction", tmp_path, DATA="embedded")
    assert m["cache_batches_recomputed"] == 0
    assert m["audio_test_accuracy"] > 0.4 and m["image_test_accuracy"] > 0.4  # trained heads; untrained ~0.1
    p = m["probes"]
    assert p["image_pretrained_efficientnet"] > 0.5 and p["image_raw_pixels"] > 0.8
    assert p["image_learned_cnn"] > 0.8 and p["audio_learned_cnn"] > 0.8
    assert all(v > 0 for v in m["throughput_items_per_s"].values())


@pytest.mark.usefixtures("av_cache")
def test_av_fusion(tmp_path: Path):
    m = run("01_av_digits/03_fusion", tmp_path, DATA="embedded")
    assert set(m["methods"]) == {"concat", "weighted", "gated", "tensor", "low_rank", "late_mean", "late_vote",
                                 "late_learned", "cross_attention", "transformer"}  # fmt: skip
    assert m["best_fusion"] > 0.7 and m["best_fusion"] >= max(m["audio"], m["image"])  # fusion helps already
    assert m["fusion_module_sizes"]["tensor"] > 10 * m["fusion_module_sizes"]["low_rank"]
    assert m["fusion_module_sizes"]["late_mean"] == 0


@pytest.mark.usefixtures("av_cache")
def test_av_training(tmp_path: Path):
    m = run("01_av_digits/04_training", tmp_path, DATA="embedded", SPEAKERS=AV_SPEAKERS)
    si = m["speaker_independent"]
    assert set(si["per_speaker"]) == set(AV_SPEAKERS) and si["best_fusion"] >= max(si["audio"], si["image"]) - 0.02
    hard = m["hard"]
    assert hard["best_fusion"] > max(hard["audio"], hard["image"])  # degraded inputs: fusion must gain
    assert m["multitask"]["digit_accuracy"] > 0.3 and m["multitask"]["speaker_accuracy"] > 0.3
    assert m["pretraining"]["partner_found"] > 0.05  # SimCLR views find their partner: chance is 1/255 (batch 128)


@pytest.mark.usefixtures("av_cache")
def test_av_evaluation(tmp_path: Path):
    m = run("01_av_digits/05_evaluation", tmp_path, DATA="embedded", SPEAKERS=AV_SPEAKERS)
    methods = m["official"]["methods"]
    assert methods[m["chosen_model"]] >= max(methods.values()) - 0.005  # chosen among the most accurate
    assert max(methods.values()) > 0.7  # chance 0.1
    assert set(m["missing_modality"]) == {"audio_missing", "image_missing", "audio_zeroed_input", "image_zeroed_input"}
    # (smoke heads train 4 epochs, too few for modality dropout to work: the full run's figures are
    # checked against the targets in test_packaging.py::test_committed_av_results_meet_the_targets)
    assert set(m["table"]) >= {"audio", "image", "late_mean", "transformer"}
    assert all(row["latency_ms"] > 0 for row in m["table"].values())
    assert {f"{p}/{m_}" for p in ("official", "hard") for m_ in ("audio", "image", "transformer")} <= set(m["ece"])
    curve = m["robustness"]["audio_curve"]
    assert curve[0]["audio"] > curve[-1]["audio"]  # noisier audio hurts the audio model
    assert "results_json" not in m  # smoke runs never write the committed results file


# ---------------------------------------------------------------- 02 image-text alignment
# Embedded runs check the mechanics on 16 toy photos (3 test images make recall trivial there). The
# real-data smoke runs (mirror) check values on 100 held-out Flickr8k images: an unaligned (random
# projection) model has text-to-image R@5 near chance (0.05) and fails every recall threshold.


def test_image_text_representation(tmp_path: Path):
    m = run("02_image_text/01_representation", tmp_path, DATA="embedded")
    assert m["n_images"] == 16 and m["n_captions"] == 48 and m["split"] == {"train": 10, "val": 3, "test": 3}
    assert m["train_test_overlap"] == 0 and m["crop_shape"] == [224, 224, 3] and m["padding_mask_ok"]
    assert 4 < m["mean_words"] < m["mean_wordpieces"] < 30


def test_image_text_feature_extraction(tmp_path: Path):
    m = run("02_image_text/02_feature_extraction", tmp_path, DATA="embedded")
    assert m["grid_shape"] == [2, 1280, 7, 7] and m["pooled_dim"] == 1280 and m["cache_identical"]
    top1 = m["caption_same_image_top1"]
    assert top1["mean"] > 5 * m["caption_same_image_chance"]  # pretrained MiniLM: captions of one photo cluster
    assert top1["mean"] >= top1["cls"]  # MiniLM was trained with mean pooling


def test_image_text_fusion_embedded(tmp_path: Path):
    m = run("02_image_text/03_fusion", tmp_path, DATA="embedded")
    assert m["linear_last_loss"] < 0.3 * m["linear_first_loss"]  # the heads fit the 10 training photos
    assert set(m["retrieval"]) == {"random projection", "linear heads (LiT-style)", "CCA", "bag-of-words text side",
                                   "ConSE (no training)"}  # fmt: skip


def test_image_text_training_embedded(tmp_path: Path):
    m = run("02_image_text/04_training", tmp_path, DATA="embedded")
    assert m["final_loss"] < 0.3 * m["first_loss"] and m["plain_final_loss"] < 0.1  # plain heads memorise
    assert m["resume_identical"]


def test_image_text_evaluation_embedded(tmp_path: Path):
    m = run("02_image_text/05_evaluation", tmp_path, DATA="embedded")
    zs = m["zero_shot"]
    assert zs["chance_10way"] == 0.1
    assert zs["linear_probe_1shot"] > 0.2  # pretrained features + one digit per class: above chance 0.1
    assert "results_json" not in m


@pytest.mark.mirror
def test_image_text_real_data(tmp_path: Path, real_mirror: Path):
    """Fusion and evaluation on Flickr8k with smoke budgets (features extracted once; 05 trains the dual encoder
    04 would, and 04 itself runs on the embedded data and the own folder). 05 keeps MiniLM locked here, so it reuses
    03's cached caption states (caching the real captions' states below the unfrozen layer would add about 25 s)."""
    fusion = run("02_image_text/03_fusion", tmp_path / "03", DATA="real")
    assert fusion["random_t2i_R@5"] < 0.15  # unaligned: near chance 0.05
    assert fusion["linear_t2i_R@5"] > 0.5 and fusion["cca_t2i_R@5"] > 0.25 and fusion["conse_t2i_R@5"] > 0.2
    assert fusion["bow_t2i_R@5"] > 0.2
    ev = run("02_image_text/05_evaluation", tmp_path / "05", DATA="real", N_ZERO_SHOT=300, UNFREEZE_TEXT_LAYERS=0)
    assert ev["random_t2i_R@5"] < 0.15
    assert ev["t2i"]["R@5"] > 0.5 and ev["t2i"]["R@1"] > 0.2 and ev["i2t"]["R@5"] > 0.45
    assert ev["t2i"]["median_rank"] <= 5
    assert ev["unseen_classes"] == ["trousers", "pullover", "sandal", "sneaker", "ankle boot"]
    assert ev["zero_shot"]["linear_probe_1shot"] > 0.3  # chance 0.1
    assert "results_json" not in ev  # smoke runs never write the committed results file


# ---------------------------------------------------------------- 01 audio-visual digits on a user's own folder
# A folder written as a user would (tests/userdata.py: 12 classes of tones and letters, clips at 44.1 kHz, 3 voices,
# grey and colour images of many sizes); every notebook of the scenario runs on it with DATA=<folder> and, as the
# notebooks advise for a small folder, smaller batches (smoke epochs are otherwise too few steps on 288 clips).


@pytest.fixture(scope="module")
def av_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userdata import write_av_folder

    return write_av_folder(tmp_path_factory.mktemp("user") / "my_av_data", 12, 44100, images_per_class=60)


@pytest.mark.usefixtures("av_cache")
def test_av_representation_own_folder(tmp_path: Path, av_folder: Path):
    m = run("01_av_digits/01_representation", tmp_path, DATA=str(av_folder))
    assert m["n_classes"] == 12 and m["n_speakers"] == 3 and m["sample_rate"] == 16000 and m["n_clips"] == 12 * 24
    assert m["audio_shape"] == [40, 101] and m["logmel_librosa_max_abs_db"] < 0.01
    assert m["pairing_correct"] == 1.0 and m["test_pairs_from_test_pool"] and m["train_test_overlap"] == 0


@pytest.mark.usefixtures("av_cache")
def test_av_feature_extraction_own_folder(tmp_path: Path, av_folder: Path):
    m = run("01_av_digits/02_feature_extraction", tmp_path, DATA=str(av_folder), BATCH_SIZE=16, N_PRETRAINED=300)
    assert m["n_classes"] == 12 and m["cache_batches_recomputed"] == 0
    assert m["audio_test_accuracy"] > 0.5 and m["image_test_accuracy"] > 0.5  # chance 1/12; smoke epochs
    assert m["probes"]["audio_learned_cnn"] > 0.6 and m["probes"]["image_learned_cnn"] > 0.6


@pytest.mark.usefixtures("av_cache")
def test_av_fusion_own_folder(tmp_path: Path, av_folder: Path):
    m = run("01_av_digits/03_fusion", tmp_path, DATA=str(av_folder), BATCH_SIZE=16)
    assert m["n_classes"] == 12 and len(m["methods"]) == 10
    # chance 1/12; 60 test pairs, fusion heads of 4 smoke epochs: within 4 pairs of the better modality (the
    # margin depends on the CPU: 3 pairs below it where image features run in bf16, AVX512-BF16)
    assert m["best_fusion"] > 0.7 and m["best_fusion"] >= max(m["audio"], m["image"]) - 4 / 60
    assert m["recipe"]["gated"] > 0.7  # the head built from library parts in the notebook's cells learns too


@pytest.mark.usefixtures("av_cache")
def test_av_training_own_folder(tmp_path: Path, av_folder: Path):
    m = run("01_av_digits/04_training", tmp_path, DATA=str(av_folder), BATCH_SIZE=16)
    assert m["n_classes"] == 12 and m["engine_loop"]["test_accuracy"] > 0.7  # the engine called directly; chance 1/12
    si = m["speaker_independent"]
    assert set(si["per_speaker"]) == {"voice0", "voice1", "voice2"} and si["best_fusion"] > 0.6
    assert m["hard"]["best_fusion"] > 0.5  # tones survive the hard protocol's noise better than digits do
    assert m["multitask"]["digit_accuracy"] > 0.6  # chance 1/12 (the test folder's voices differ by a 4% pitch only)


@pytest.mark.usefixtures("av_cache")
def test_av_evaluation_own_folder(tmp_path: Path, av_folder: Path):
    m = run("01_av_digits/05_evaluation", tmp_path, DATA=str(av_folder), BATCH_SIZE=16)
    methods = m["official"]["methods"]
    assert m["n_classes"] == 12 and max(methods.values()) > 0.8  # chance 1/12
    assert m["table"]["audio"]["official"] > 0.6 and m["table"]["image"]["official"] > 0.6
    assert "results_json" not in m  # only the full run on the real data writes the committed results file


# ---------------------------------------------------------------- 02 image-text on a user's own folder
# 72 photos of coloured shapes with 1-5 captions each (tests/userdata.py), as an imagefolder with a label column.


@pytest.fixture(scope="module")
def caption_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userdata import write_caption_folder

    return write_caption_folder(tmp_path_factory.mktemp("user") / "my_photos")


@pytest.fixture(scope="module")
def _it_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("it_cache")


@pytest.fixture
def it_cache(_it_cache: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """One cache for the image-text notebook tests on the user folder: features are extracted once."""
    monkeypatch.setenv("MMHELPERS_CACHE", str(_it_cache))
    return _it_cache


@pytest.mark.usefixtures("it_cache")
def test_image_text_own_folder(tmp_path: Path, caption_folder: Path):
    rep = run("02_image_text/01_representation", tmp_path / "01", DATA=str(caption_folder))
    assert (
        rep["n_images"] == 72 and rep["split"] == {"train": 58, "val": 7, "test": 7} and rep["train_test_overlap"] == 0
    )
    feats = run("02_image_text/02_feature_extraction", tmp_path / "02", DATA=str(caption_folder))
    assert (
        feats["cache_identical"] and feats["caption_same_image_top1"]["mean"] > 3 * feats["caption_same_image_chance"]
    )
    fusion = run("02_image_text/03_fusion", tmp_path / "03", DATA=str(caption_folder))
    assert fusion["linear_last_loss"] < 0.5 * fusion["linear_first_loss"]
    training = run("02_image_text/04_training", tmp_path / "04", DATA=str(caption_folder))
    assert training["final_loss"] < 0.5 * training["first_loss"] and training["resume_identical"]
    ev = run("02_image_text/05_evaluation", tmp_path / "05", DATA=str(caption_folder), N_ZERO_SHOT=30)
    assert ev["t2i"]["R@1"] > 0.5 and ev["i2t"]["R@1"] > 0.5  # 7 test photos: chance 1/7
    assert sorted(ev["seen_classes"] + ev["unseen_classes"]) == ["circle", "cross", "square", "triangle"]
    assert ev["zero_shot"]["all_10way"] > 0.5  # zero-shot on the folder's own labels (prompts from the class names)
    assert ev["zero_shot"]["linear_probe_1shot"] > 0.4  # chance 0.25
