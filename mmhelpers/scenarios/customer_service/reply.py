"""The agent's answer: a small instruction-tuned language model writes it from the intent and the transcript, and
a voice speaks it.

    model, tokenizer = load_causal_lm()                      # SmolLM2-135M-Instruct offline (mmhelpers.lm)
    text = write_reply("report_outage", "my internet is down since the storm", model, tokenizer)
    wave, sr = speak(text)                                   # Piper's "joe", 22.05 kHz

An empty transcript (nothing heard) never reaches the model: the caller is asked to repeat (``NOT_HEARD``).
Decoding is greedy, so the same call gets the same reply; the reply is cut to its first two sentences.
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import torch

from mmhelpers.speech import Voice, synthesize

NOT_HEARD = "Sorry, I didn't catch that. Could you say it again?"
TO_AGENT = "Let me pass you to one of my colleagues who can help. Please hold the line."
SYSTEM = ("You are a friendly agent at the help desk of a phone and internet company, speaking to a caller on "
          "the phone. Answer in one or two short sentences. Say what you will do next for the caller.")  # fmt: skip
# what the agent does for each intent (a hint for the model; any other intent name is read as words)
ACTIONS = {
    "check_balance": "look up the caller's balance",
    "pay_bill": "take a payment for the bill",
    "dispute_charge": "look into a charge the caller disputes",
    "update_payment_method": "update the card or bank details on the account",
    "reset_password": "send a password reset link",
    "cancel_service": "start cancelling the service",
    "upgrade_plan": "explain plan upgrades",
    "report_outage": "check for an outage at the caller's address",
    "slow_connection": "run a line test for the slow connection",
    "change_address": "update the caller's address",
    "track_order": "track the caller's order",
    "return_device": "arrange a return of the device",
    "activate_roaming": "switch on roaming",
    "opening_hours": "give the opening hours: 8 am to 8 pm, Monday to Saturday",
    "talk_to_agent": "transfer the caller to a person",
}


def reply_messages(intent: str, transcript: str) -> list[dict[str, str]]:
    """The chat the model completes: the agent's instructions, then the caller's words with the routed intent."""
    action = ACTIONS.get(intent, intent.replace("_", " "))
    return [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": f'The caller said: "{transcript.strip()}"\nTheir request: {action}.'},
    ]


def first_sentences(text: str, n: int = 2) -> str:
    """The first ``n`` sentences of ``text`` (a reply cut where the model ran on)."""
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return " ".join(parts[:n]).strip()


@torch.inference_mode()
def write_reply(intent: str, transcript: str, model: Any, tokenizer: Any, max_new_tokens: int = 48) -> str:
    """The agent's reply to a call routed to ``intent``; ``NOT_HEARD`` when the transcript is empty."""
    if not transcript or not transcript.strip():
        return NOT_HEARD
    ids = tokenizer.apply_chat_template(reply_messages(intent, transcript), add_generation_prompt=True,
                                        return_tensors="pt", return_dict=True)  # fmt: skip
    device = next(model.parameters()).device
    ids = {k: v.to(device) for k, v in ids.items()}
    out = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False,
                         pad_token_id=tokenizer.pad_token_id or tokenizer.eos_token_id)  # fmt: skip
    text = tokenizer.decode(out[0, ids["input_ids"].shape[1] :], skip_special_tokens=True)
    return first_sentences(text) or NOT_HEARD


AGENT_VOICE = Voice("piper", "joe", speed=170)


def speak(text: str, voice: Voice = AGENT_VOICE) -> tuple[np.ndarray, int]:
    """The reply spoken: (float32 samples, sample rate)."""
    (wave,), sr = synthesize([text], voice)
    return wave, sr
