"""The five notebooks of scenario 03 (a small vision-language model) run with their smoke settings on the
embedded data (generated Sort-of-CLEVR scenes), and their key figures are right. The notebooks share one
cache (features, checkpoints) for the module; 05 also passes on its own (it then trains what it needs).

Thresholds are set so that a broken or untrained model fails them (see each assertion's comment). The smoke
VQA run is the curriculum stage alone (left/right and top/bottom questions), so its accuracy checks are on
those two question types, where a model that does not read the asked object's slot stays at ~50%.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mmhelpers.paths import cache_root
from mmhelpers.run_notebooks import discover, execute

pytestmark = [pytest.mark.notebook, pytest.mark.usefixtures("module_cache")]  # 05 resumes what 04 trained
NOTEBOOKS = discover()
BASELINE_STEPS = 100  # VQA baselines in the smoke runs of 04 and 05 (the same, so 05 reuses 04's checkpoints)


def run(name: str, tmp_path: Path, **params: object) -> dict:
    """Execute a notebook with its smoke settings (one thread: faster on a busy 2-core machine); name = "scenario/stem"."""
    (path,) = [p for p in NOTEBOOKS if f"{p.parent.name}/{p.stem}" == name]
    return execute(
        path, {"SMOKE": True, "DATA": "embedded", "THREADS": 1, **params}, out_dir=tmp_path / "executed",
        metrics_json=tmp_path / "metrics.json",
    )  # fmt: skip


def test_mini_vlm_representation(tmp_path: Path):
    m = run("03_mini_vlm/01_representation", tmp_path)
    assert m["data"] == "embedded"
    assert m["patch_tokens"] == [64, 192] and m["grid_tokens_224"] == 49  # 8x8 patches of 8x8x3; 7x7 cells
    assert 10 < m["word_vocab_size"] < 1000 and m["wordpiece_vocab_size"] == 30522
    ids = m["encoded_caption"]
    assert ids[0] == 1 and 2 in ids and ids[-1] == 0  # <bos> ... <eos> <pad>...
    assert m["oov_rate_test"] < 0.05  # template captions: the trained vocabulary covers the test captions
    assert m["questions_per_scene"] == 36 and m["n_relational"] == 18
    share = m["majority_answer_share"]
    assert 0.4 < share["shape"] < 0.6 and 0.1 < share["closest_color"] < 0.35  # 2 shapes; 5 other colours


def test_mini_vlm_feature_extraction(tmp_path: Path):
    m = run("03_mini_vlm/02_feature_extraction", tmp_path)
    assert m["features_shape"] == [300, 16, 1280]  # 300 scenes, 128 px -> 4x4 EfficientNet cells
    assert m["cache_identical"] and m["cached_call_s"] < 5
    assert m["projected_shape"] == [8, 64]  # 8 learned queries at the smoke decoder width
    assert m["projector_parameters"] > 1280 * 64  # at least the first linear layer
    assert m["vqa_cells_shape"] == [64, 64] and m["vqa_slots_shape"] == [10, 72]  # 8x8 cells; 10 tokens of 64 + 8
    assert m["vqa_regions_per_scene"] == [6, 6, 6, 6]  # one colour region per object


def test_mini_vlm_fusion(tmp_path: Path):
    m = run("03_mini_vlm/03_fusion", tmp_path)
    p = m["parameters"]
    assert m["parts_sum_to_total"]
    assert p["prefix"]["cross_attention"] == 0 < p["cross"]["cross_attention"]  # only cross fusion adds layers
    assert p["prefix"]["decoder"] == p["cross"]["decoder"] and p["prefix"]["projector"] == p["cross"]["projector"]
    assert all(m["mask_checks"].values()), m["mask_checks"]
    assert m["kv_cache_identical"]  # cached and uncached greedy decoding give the same tokens
    # the work the cache saves, counted in positions (wall-clock speed-ups at 32 tokens of a tiny decoder move with
    # the machine's load, ~1-2x): at 32 tokens ~20x (prefix) and ~16x (cross); a cache that recomputes is 1x
    assert all(r > 5 for r in m["kv_cache_work_ratio_longest"].values()), m["kv_cache_work_ratio_longest"]
    assert all(s > 0 for s in m["kv_cache_speedup_longest"].values())  # timed and recorded, not a threshold


def test_mini_vlm_training(tmp_path: Path):
    m = run("03_mini_vlm/04_training", tmp_path, BASELINE_STEPS=BASELINE_STEPS)
    for fusion, c in m["caption"].items():
        assert c["ppl_with_pretraining"] < c["ppl_without_pretraining"], fusion  # pre-training helps
    assert min(c["ppl_with_pretraining"] for c in m["caption"].values()) < m["lm_text_only_ppl"]  # the image helps
    assert m["final_loss"]["pretrain"] < 0.5 * m["initial_loss"]["pretrain"]  # the language model learned
    assert m["initial_loss"]["prefix"] < 0.5 * m["initial_loss"]["prefix_scratch"]  # fine-tuning starts pre-trained
    v = m["vqa"]
    assert v["question_only"]["non_relational"] > 0.4  # the answer priors (two answers each): ~0.5
    assert v["question_only"]["horizontal"] < 0.65 and v["image_only"]["horizontal"] < 0.65  # each lacks an input
    for t in ("horizontal", "vertical"):
        assert v["test"][t] > 0.9, t  # ~1.0; an untrained or image-blind model ~0.5
    assert v["val_curve"]["steps"] == [200, 400, 600, 800]


def test_mini_vlm_evaluation(tmp_path: Path):
    m = run("03_mini_vlm/05_evaluation", tmp_path, BASELINE_STEPS=BASELINE_STEPS, N_SHOW=2)
    t = m["caption_table"]
    chosen = t[m["chosen_fusion"]]
    assert chosen["cider"] > 1.3 * t["most frequent"]["cider"]  # ~1.4 vs ~0.8; an untrained model scores ~0
    assert chosen["bleu4"] > t["most frequent"]["bleu4"]
    assert m["decoding_cider"]["beam"] > t["most frequent"]["cider"]
    assert m["kv_cache_identical"]
    vqa = m["vqa"]
    assert set(vqa) == {"full model", "question_only", "image_only", "majority"}
    assert abs(vqa["question_only"]["overall"] - vqa["majority"]["overall"]) < 0.05  # question-only = priors
    assert vqa["full model"]["horizontal"] > 0.9 > 0.65 > vqa["majority"]["horizontal"]  # reads the asked object
    assert 0.05 < m["visual_map_top5pct_mass"] <= 1.0 and m["visual_tokens_per_scene"] == 6.0  # one per object
    rob = m["vqa_robustness"]  # the same test scenes compressed, colour-cast, noisy and anti-aliased
    assert set(rob) == {"clean", "jpeg", "colour_shift", "noise", "antialias"}
    assert rob["clean"]["-"] == vqa["full model"] and set(rob["jpeg"]) == {"90", "75", "50"}
    assert "results_json" not in m  # only full real-data runs write results/mini_vlm.json


# ---------------------------------------------------------------- on a user's own LLaVA-style folder
# 216 photos of one coloured shape each (every shape x colour x place 3 times, random sizes, PNG and JPEG) with
# captions.json (1-3 captions per photo) and vqa.jsonl (colour, shape and a two-turn place record per photo),
# written by tests/userdata.py. Runs after the embedded tests, so the Sort-of-CLEVR smoke models they trained
# are loaded from the module's cache, not trained again.


@pytest.fixture(scope="module")
def llava_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userdata import write_llava_folder

    return write_llava_folder(tmp_path_factory.mktemp("user") / "my_vlm_data")


def test_mini_vlm_own_folder(tmp_path: Path, llava_folder: Path):
    data = str(llava_folder)
    rep = run("03_mini_vlm/01_representation", tmp_path / "01", DATA=data)
    own = rep["own_vqa"]
    assert own["images"] == 216 and own["questions"] == 216 * 4 and own["types"] == ["colour", "shape", "place"]
    assert own["split_images"] == {"train": 172, "val": 22, "test": 22}
    assert own["majority_answer_share"]["colour"] < 0.3  # six colours: no answer prior to lean on
    fx = run("03_mini_vlm/02_feature_extraction", tmp_path / "02", DATA=data)
    assert fx["features_shape"] == [216, 16, 1280] and fx["own_vqa_features_shape"] == [216, 16, 1280]
    fu = run("03_mini_vlm/03_fusion", tmp_path / "03", DATA=data)
    assert fu["parts_sum_to_total"] and fu["kv_cache_identical"]
    tr = run("03_mini_vlm/04_training", tmp_path / "04", DATA=data, BASELINE_STEPS=BASELINE_STEPS)
    assert min(c["ppl_with_pretraining"] for c in tr["caption"].values()) < tr["lm_text_only_ppl"]  # the image helps
    v = tr["own_vqa"]
    assert v["final_loss"] < 0.2 * v["first_loss"]
    assert v["val"]["model"]["overall"] > v["val"]["question prior"]["overall"] + 0.3  # ~0.8 vs ~0.2
    ev = run("03_mini_vlm/05_evaluation", tmp_path / "05", DATA=data, BASELINE_STEPS=BASELINE_STEPS, N_SHOW=2)
    t = ev["caption_table"]
    assert t[ev["chosen_fusion"]]["cider"] > 2 * t["most frequent"]["cider"]  # ~3.4 vs ~0.6; untrained ~0
    model, prior = ev["own_vqa"]["model"], ev["own_vqa"]["question prior"]
    assert model["overall"] > prior["overall"] + 0.3  # ~0.8 vs ~0.2: it reads the image for the question
    assert model["shape"] > 0.8 and model["place"] > 0.8 > 0.4 > prior["shape"]  # 4 shapes, 3 places
    assert len(ev["own_vqa_examples"]) == 2 and "results_json" not in ev


@pytest.mark.mirror
def test_mini_vlm_real_data(tmp_path: Path, real_mirror: Path, _module_cache: Path):
    """Notebooks 02, 04 and 05 on Flickr8k with smoke budgets (the VQA scenes are generated either way, so the smoke
    VQA checkpoints the embedded tests trained are reused, as they would be in one cache; run alone, it trains them)."""
    if (_module_cache / "vqa").is_dir():
        shutil.copytree(_module_cache / "vqa", cache_root() / "vqa", dirs_exist_ok=True)
    fx = run("03_mini_vlm/02_feature_extraction", tmp_path / "02", DATA="real")
    assert fx["features_shape"][0] == 1000 and fx["cache_identical"]  # the 1,000-image subset, cached
    tr = run("03_mini_vlm/04_training", tmp_path / "04", DATA="real", BASELINE_STEPS=BASELINE_STEPS)
    for fusion, c in tr["caption"].items():
        assert c["ppl_with_pretraining"] < c["ppl_without_pretraining"], fusion  # pre-training helps on Flickr8k
    ev = run("03_mini_vlm/05_evaluation", tmp_path / "05", DATA="real", BASELINE_STEPS=BASELINE_STEPS, N_SHOW=2)
    t = ev["caption_table"]
    assert t[ev["chosen_fusion"]]["cider"] > t["most frequent"]["cider"]  # an untrained decoder scores ~0
    assert ev["kv_cache_identical"] and "results_json" not in ev
