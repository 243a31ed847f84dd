"""The mini VLM on a user's LLaVA-style folder: finding the files, splitting by image, captioning data, and the
own-data VQA recipe's encoding, baseline, scoring and resume. That it learns is checked by the notebook tests
(tests/test_notebooks_mini_vlm.py), which train its smoke model once."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch

from mmhelpers.data.llava_folder import llava_file, split_by_image
from mmhelpers.errors import DataError
from mmhelpers.scenarios.mini_vlm.answers import (
    AnswerConfig,
    AnswerData,
    answer_accuracy,
    answer_questions,
    build_answer_tokenizer,
    encode_examples,
    load_answer_data,
    prior_answers,
    train_answers,
)
from mmhelpers.scenarios.mini_vlm.captioning import CaptionConfig, grid_features, load_caption_data

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from userdata import write_llava_folder

    return write_llava_folder(tmp_path_factory.mktemp("user") / "my_vlm_data", repeats=1)  # 72 images


def test_llava_file_finds_the_task_file_or_says_what_is_missing(folder: Path, tmp_path: Path) -> None:
    assert llava_file(folder, "vqa") == folder / "vqa.jsonl"
    assert llava_file(folder, "captions") == folder / "captions.json"  # a JSON list, as LLaVA's own files
    assert llava_file(folder / "vqa.jsonl", "captions") == folder / "vqa.jsonl"  # a file is taken as it is
    with pytest.raises(DataError, match="has no captions.jsonl or captions.json") as e:
        llava_file(tmp_path, "captions")
    assert e.value.path == tmp_path
    (tmp_path / "vqa.jsonl").write_text("")
    (tmp_path / "vqa.json").write_text("[]")
    with pytest.raises(DataError, match="holds both"):
        llava_file(tmp_path, "vqa")
    with pytest.raises(DataError, match="neither"):
        llava_file(tmp_path / "missing", "vqa")


def test_split_by_image_is_seeded_disjoint_and_complete() -> None:
    images = [Path(f"{i}.png") for i in range(50)]
    s = split_by_image(images, seed=3)
    assert [len(s[k]) for k in ("train", "val", "test")] == [40, 5, 5]
    assert sorted(np.concatenate(list(s.values())).tolist()) == list(range(50))
    assert all(np.array_equal(s[k], split_by_image(images, seed=3)[k]) for k in s)
    assert not np.array_equal(s["test"], split_by_image(images, seed=4)["test"])
    assert [len(v) for v in split_by_image(images[:3]).values()] == [1, 1, 1]  # val and test get at least one
    with pytest.raises(DataError, match="at least 3"):
        split_by_image(images[:2])


def test_captions_from_a_folder_split_by_image_and_lm_corpus_from_training_images_only(folder: Path) -> None:
    cfg = replace(CaptionConfig().smoke(), data=str(folder))
    data = load_caption_data(cfg)
    assert len(data) == 72 and [len(data.splits[k]) for k in ("train", "val", "test")] == [58, 7, 7]
    records = json.loads((folder / "captions.json").read_text())
    assert sum(map(len, data.captions)) == len(records)  # every record's answer is a caption of its image
    train = {data.image_ids[i] for i in data.splits["train"]}
    assert set(data.lm_image_ids) == train  # no val or test caption in the text-only corpus
    assert all(p.is_file() for p in data.images) and data.source.startswith("own data:")
    with pytest.raises(ValueError, match="existing folder or file"):
        CaptionConfig(data=str(folder / "nope"))


def test_answer_data_has_every_turn_and_keeps_an_images_questions_in_one_split(folder: Path) -> None:
    data = load_answer_data(AnswerConfig(data=str(folder)))
    assert len(data.images) == 72 and len(data) == 72 * 4  # colour, shape and a two-turn place record
    assert list(dict.fromkeys(data.qtypes)) == ["colour", "shape", "place"]
    rows = {k: set(data.rows(k).tolist()) for k in ("train", "val", "test")}
    assert sum(map(len, rows.values())) == len(data) and not (rows["train"] & rows["test"])
    test_images = set(data.image_of[list(rows["test"])].tolist())
    assert test_images == set(data.splits["test"].tolist())
    assert data.questions[2] == "Where is the shape?" and data.questions[3] == "Which side of the picture is it on?"


def test_encoding_targets_only_the_answer_and_aligns_every_answer(folder: Path) -> None:
    cfg = AnswerConfig(data=str(folder), question_len=6, answer_len=4)
    data = load_answer_data(cfg)
    tok = build_answer_tokenizer(data, cfg)
    qs = ["What colour is the shape?", "a b c d e f g what shape"]  # the second is longer than the prompt
    inputs, targets = encode_examples(tok, qs, ["red", "on the left side of it"], cfg)
    assert inputs.shape == targets.shape == (2, cfg.block_size)
    assert (targets[:, : cfg.question_len - 1] == -100).all()  # never predict the question
    assert tok.decode(targets[0, cfg.question_len - 1 :].clamp(min=0))[0] == "red"
    assert targets[0, cfg.question_len].item() == tok.eos_id  # then <eos>, then nothing
    assert (targets[0, cfg.question_len + 1 :] == -100).all()
    assert inputs[0, cfg.question_len - 6 : cfg.question_len].tolist()[0] == tok.bos_id  # <bos> + 5 words
    assert tok.decode(inputs[1:, : cfg.question_len])[0] == "<unk> <unk> <unk> what shape"  # keeps the last words
    assert tok.decode(targets[1:, cfg.question_len - 1 :].clamp(min=0))[0] == "on the left"  # cut to answer_len
    with pytest.raises(DataError, match="answer 0 has no words"):
        encode_examples(tok, ["what?"], ["?!"], cfg)


def test_accuracy_normalises_words_and_the_prior_is_the_most_frequent_answer_per_question() -> None:
    acc = answer_accuracy(["On the Left.", "red", "blue"], ["on the left", "red", "red"], ["p", "c", "c"])
    assert acc == {"p": 1.0, "c": 0.5, "overall": pytest.approx(2 / 3)}
    images = [Path(f"{i}.png") for i in range(4)]
    data = AnswerData(images, np.array([0, 0, 1, 2, 3, 3]), ["what colour?", "what shape?", "what colour?",
                      "what colour?", "what colour?", "new question?"], ["red", "circle", "red", "blue", "red", "x"],
                      ["c", "s", "c", "c", "c", "s"],
                      {"train": np.array([0, 1, 2]), "val": np.array([]), "test": np.array([3])}, "test")  # fmt: skip
    # test rows: "what colour?" -> the most frequent training answer "red"; an unseen question -> its type's
    assert prior_answers(data, "test") == ["red", "circle"]


def test_own_vqa_run_resumes_to_the_same_model_and_answers_are_words_of_the_vocabulary(
    folder: Path, tmp_path: Path
) -> None:
    cfg = replace(AnswerConfig(data=str(folder), device="cpu").smoke(), steps=12, checkpoint_every=6, batch_size=16)
    data = load_answer_data(cfg)
    tok = build_answer_tokenizer(data, cfg)
    feats = grid_features(data.images, cfg.image_size, progress=False)
    assert feats.shape == (72, 16, 1280)
    model, hist = train_answers(data, tok, feats, cfg, tmp_path / "ckpt", progress=False)
    assert len(hist.loss) == 12
    again, hist2 = train_answers(data, tok, feats, cfg, tmp_path / "ckpt", resume="latest", progress=False)
    assert hist2.loss == hist.loss  # the finished run is loaded, not retrained
    states = zip(model.state_dict().values(), again.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in states)
    with pytest.raises(FileExistsError):  # a fresh run refuses to overwrite an existing checkpoint
        train_answers(data, tok, feats, cfg, tmp_path / "ckpt", progress=False)
    rows = data.rows("test")[:10]
    answers = answer_questions(model, feats[data.image_of[rows]], [data.questions[i] for i in rows], tok, cfg)
    assert len(answers) == 10 and all(set(a.split()) <= set(tok.tokenizer.get_vocab()) for a in answers)
