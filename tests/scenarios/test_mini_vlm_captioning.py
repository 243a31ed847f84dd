"""The captioning recipe on the embedded Sort-of-CLEVR set: it learns, pre-training helps, caches and resumes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import mmhelpers.encoders
from mmhelpers.caption_metrics import caption_scores
from mmhelpers.scenarios.mini_vlm.captioning import (
    CaptionConfig,
    CaptionResult,
    build_model,
    build_tokenizer,
    generate_captions,
    image_features,
    load_caption_data,
    perplexity,
    pretrain_lm,
    run_captioning,
)

pytestmark = pytest.mark.usefixtures("one_thread")

SMOKE = CaptionConfig().smoke()


@pytest.fixture(scope="module")
def smoke(tmp_path_factory: pytest.TempPathFactory, one_thread: None) -> CaptionResult:
    """One smoke run of the whole recipe, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("caption_smoke")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MMHELPERS_CACHE", str(root / "cache"))
        mp.delenv("MMHELPERS_MIRROR", raising=False)
        return run_captioning(SMOKE, progress=False, checkpoint_dir=root / "ckpt")


def test_result_has_the_promised_shape(smoke: CaptionResult) -> None:
    m = smoke.metrics
    for key in (
        "bleu4",
        "cider",
        "nn_bleu4",
        "nn_cider",
        "mf_cider",
        "ppl_with_pretraining",
        "ppl_without_pretraining",
    ):
        assert isinstance(m[key], float), key
    assert set(m["fusion_designs"]) == {"prefix", "cross"}
    assert m["chosen_fusion"] in m["fusion_designs"]
    assert set(smoke.histories) == {"pretrain", "prefix", "prefix_scratch", "cross", "cross_scratch"}
    assert len(smoke.histories["pretrain"]) == SMOKE.pretrain_steps
    assert len(smoke.histories["cross"]) == SMOKE.finetune_steps
    assert smoke.features.shape == (sum(SMOKE.split), (SMOKE.image_size // 32) ** 2, 1280)
    assert len(smoke.captions["prefix"]) == SMOKE.split[2]


def test_trained_captions_beat_most_frequent_caption_and_untrained_model_does_not(smoke: CaptionResult) -> None:
    m = smoke.metrics
    assert m["cider"] > m["mf_cider"] + 0.2, (m["cider"], m["mf_cider"])
    data, test = smoke.data, torch.as_tensor(smoke.data.splits["test"])
    untrained = build_model(SMOKE, smoke.tokenizer.vocab_size, m["chosen_fusion"], smoke.features.shape[1]).eval()
    caps = generate_captions(untrained, smoke.features[test], smoke.tokenizer, "greedy")
    assert caption_scores(data.split_captions("test"), caps)["cider"] < m["mf_cider"]


def test_pretraining_lowers_test_perplexity_for_both_fusions(smoke: CaptionResult) -> None:
    for fusion, d in smoke.metrics["fusion_designs"].items():
        assert d["ppl_with_pretraining"] < d["ppl_without_pretraining"], fusion
    assert smoke.histories["pretrain"][-1] < 0.5 * smoke.histories["pretrain"][0]


def test_lm_corpus_excludes_val_and_test_images(smoke: CaptionResult) -> None:
    data = smoke.data
    held_out = {data.image_ids[i] for s in ("val", "test") for i in data.splits[s]}
    assert held_out.isdisjoint(data.lm_image_ids)
    assert {data.image_ids[i] for i in data.splits["train"]} <= set(data.lm_image_ids)
    assert len(data.lm_corpus) == len(data.lm_image_ids) > 5 * SMOKE.split[0]


def test_data_seed_fixes_the_split_whatever_the_training_seed() -> None:
    from dataclasses import replace

    from mmhelpers.scenarios.mini_vlm.captioning import _run_key

    base = replace(SMOKE, seed=0)
    same = load_caption_data(replace(base, seed=1, data_seed=0))
    committed = load_caption_data(base)
    other = load_caption_data(replace(base, seed=1))  # data_seed None: the split follows the training seed
    for s in ("train", "val", "test"):
        assert same.splits[s].tolist() == committed.splits[s].tolist()
    assert same.captions == committed.captions and same.lm_corpus == committed.lm_corpus
    assert other.splits["test"].tolist() != committed.splits["test"].tolist()
    # the default data (data_seed None or equal to seed) keeps the notebooks' checkpoint keys; another one changes them
    assert _run_key(replace(base, data_seed=0), "pretrain") == _run_key(base, "pretrain")
    assert _run_key(replace(base, seed=1, data_seed=0), "finetune") != _run_key(replace(base, seed=1), "finetune")


@pytest.mark.mirror
def test_real_lm_corpus_excludes_val_and_test_images(real_mirror: Path) -> None:
    from mmhelpers.data.flickr8k import load_flickr8k_all_captions

    data = load_caption_data(CaptionConfig())
    held_out = {data.image_ids[i] for s in ("val", "test") for i in data.splits[s]}
    assert [len(data.splits[s]) for s in ("train", "val", "test")] == [800, 100, 100]
    assert held_out.isdisjoint(data.lm_image_ids)
    everything = load_flickr8k_all_captions()
    assert len(data.lm_corpus) == sum(len(v) for v in everything.values()) - sum(len(everything[h]) for h in held_out)


def test_features_are_cached(monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = CaptionConfig().smoke()
    data = load_caption_data(cfg)
    data.images = data.images[:4]
    first = image_features(data, cfg, progress=False)
    assert first.shape == (4, (cfg.image_size // 32) ** 2, 1280)

    def no_encoder(*args: object, **kwargs: object) -> None:
        raise AssertionError("the encoder ran although the features were cached")

    monkeypatch.setattr(mmhelpers.encoders, "build_image_encoder", no_encoder)
    torch.testing.assert_close(image_features(data, cfg, progress=False), first)


def test_checkpoint_resume_gives_the_uninterrupted_run(tmp_path: Path) -> None:
    cfg = CaptionConfig(data="embedded", split=(20, 5, 5), n_lm_scenes=30, vocab_size=100, min_frequency=1,
                        n_layer=1, n_embd=32, pretrain_steps=12, pretrain_batch_size=16, checkpoint_every=4)  # fmt: skip
    data = load_caption_data(cfg)
    tok = build_tokenizer(data, cfg)

    def run(
        ckpt: Path | None, stop_at: int | None = None, resume: str | None = "latest"
    ) -> tuple[list[float], torch.nn.Module]:
        model = build_model(cfg, tok.vocab_size)
        return pretrain_lm(model, tok, data.lm_corpus, cfg, ckpt, progress=False, stop_at=stop_at, resume=resume), model

    full_losses, full = run(None)
    part, _ = run(tmp_path, stop_at=6)  # interrupted after step 6 (checkpoint saved there)
    assert len(part) == 6
    with pytest.raises(FileExistsError):  # resuming is explicit: a fresh run never overwrites the checkpoint
        run(tmp_path, resume=None)
    resumed_losses, resumed = run(tmp_path)
    assert resumed_losses == full_losses
    for (name, a), b in zip(full.state_dict().items(), resumed.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b, msg=name)
    # a finished checkpoint is loaded, not retrained
    again_losses, again = run(tmp_path)
    assert again_losses == full_losses
    captions = [data.captions[i] for i in data.splits["test"]]
    assert perplexity(again, None, captions, tok, cfg.max_len) == pytest.approx(
        perplexity(full, None, captions, tok, cfg.max_len)
    )
