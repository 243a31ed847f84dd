"""The sizes the mini-VLM notebooks run at (mmhelpers.scenarios.mini_vlm.schedules): the full run is the recipes'
defaults, unchanged; the embedded default is a shorter run of the same recipes; the three never share checkpoints."""

from __future__ import annotations

from dataclasses import asdict

import pytest

from mmhelpers.scenarios.mini_vlm.captioning import CaptionConfig
from mmhelpers.scenarios.mini_vlm.schedules import notebook_configs
from mmhelpers.scenarios.mini_vlm.vqa import VQAConfig, vqa_set


def test_real_data_runs_the_full_schedules_unchanged():
    """DATA="real" (results/mini_vlm.json) trains what it always did: the recipes' defaults, 500-step baselines."""
    c = notebook_configs("real", seed=0)
    assert c.schedule == "full"
    assert c.caption == CaptionConfig(data="real", seed=0) and c.vqa == VQAConfig(seed=0)
    assert c.vqa.steps == 7_500 and c.caption.finetune_steps == 250 and c.baseline_steps == 500
    assert c.vqa_dir.parts[-2:] == ("vqa", "full_seed0")


def test_embedded_default_is_a_shorter_run_of_the_same_recipes():
    short, full = notebook_configs("embedded"), notebook_configs("embedded", schedule="full")
    assert short.schedule == "short" and full.schedule == "full"
    assert full.caption == CaptionConfig(data="embedded") and full.vqa == VQAConfig()
    assert short.caption.data == "embedded" and short.vqa.steps <= full.vqa.steps / 2
    sc, fc = short.caption, full.caption  # fewer captions seen (400 x 32 < 250 x 64), by a smaller decoder
    assert sc.finetune_steps * sc.finetune_batch_size < fc.finetune_steps * fc.finetune_batch_size
    assert sc.pretrain_steps * sc.pretrain_batch_size < fc.pretrain_steps * fc.pretrain_batch_size
    assert sc.n_embd < fc.n_embd and sum(sc.split) < sum(fc.split)
    assert short.baseline_steps < full.baseline_steps
    # the VQA recipe itself is the same: only the schedule (and the size of the test set) is shorter
    schedule = {"steps", "warmup_steps", "curriculum_steps", "eval_every", "checkpoint_every", "n_scenes_test"}
    differ = {k for k, v in asdict(short.vqa).items() if asdict(full.vqa)[k] != v}
    assert differ <= schedule, differ
    # checkpoints of different schedules never meet (a resumed run with another config would be an error)
    assert len({short.vqa_dir, full.vqa_dir, notebook_configs("embedded", smoke=True).vqa_dir}) == 3


def test_smoke_overrides_the_schedule_and_parameters_are_checked():
    smoke = notebook_configs("real", smoke=True, baseline_steps=100)
    assert smoke.schedule == "smoke" and smoke.vqa == VQAConfig.smoke() and smoke.baseline_steps == 100
    assert smoke.caption.data == "real" and smoke.caption.finetune_steps == CaptionConfig().smoke().finetune_steps
    assert notebook_configs("embedded", baseline_steps=None).baseline_steps is None  # as many as the full model
    with pytest.raises(ValueError, match="SCHEDULE"):
        notebook_configs("embedded", schedule="long")
    with pytest.raises(ValueError, match="BASELINE_STEPS"):
        notebook_configs("embedded", baseline_steps="many")


def test_vqa_sets_are_built_once_per_process():
    a, b = vqa_set(3, 7), vqa_set(3, 7)
    assert a is b and len(a) == 3 and vqa_set(3, 8) is not a
