"""Conversations in the language model's own chat template, with image tokens and a loss on the assistant's replies only.

    tok = smollm2_tokenizer(); image_id = add_image_token(tok)
    ex = encode_chat(tok, [("What is in the photo?", "A dog on a beach.")], n_image_tokens=16)
    batch = collate([ex, ...], pad_id=tok.pad_token_id)      # input_ids, attention_mask, labels, image_positions

As LLaVA does: the image comes first in the first user message, as ``<image>`` expanded to ``n_image_tokens``
placeholder tokens whose embeddings the projector's outputs replace; the labels are -100 everywhere except the
assistant's replies (their end-of-turn token included, so the model learns to stop). The assistant spans are
found by rendering the template up to each reply, so any template works that renders a conversation's prefix
as a prefix of its text (ChatML, Llama 3, Gemma); one that does not gets a clear error.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

IMAGE_TOKEN = "<image>"
IGNORE = -100  # label of a position the loss skips (PyTorch's cross_entropy default)


def add_image_token(tokenizer) -> int:
    """Make ``<image>`` one special token of ``tokenizer`` (added once); return its id.

    A model whose tokenizer grew needs ``model.resize_token_embeddings(len(tokenizer))``; the new row is never
    trained or read, since the projector's outputs replace the embeddings at image positions.
    """
    if IMAGE_TOKEN not in tokenizer.added_tokens_encoder:  # cheap (get_vocab() builds a 49k-entry dict per call)
        existing = tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)
        if existing is None or existing == tokenizer.unk_token_id:
            tokenizer.add_special_tokens({"additional_special_tokens": [IMAGE_TOKEN]})
    return tokenizer.convert_tokens_to_ids(IMAGE_TOKEN)


def messages(turns: Sequence[tuple[str, str]], system: str | None = None, image: bool = True) -> list[dict[str, str]]:
    """(question, answer) turns as chat messages; the image opens the first user message. ``system``: a system
    message (``""``: an empty one); None leaves it to the template (SmolLM2's adds its default: 16 tokens more)."""
    out = [{"role": "system", "content": system}] if system is not None else []
    for i, (question, answer) in enumerate(turns):
        out.append({"role": "user", "content": (IMAGE_TOKEN + "\n" if image and i == 0 else "") + question})
        out.append({"role": "assistant", "content": answer})
    return out


@dataclass
class EncodedChat:
    input_ids: torch.Tensor  # (L,) token ids, image placeholders included
    labels: torch.Tensor  # (L,) the token to predict at each position's *own* place, IGNORE outside the replies
    image_positions: torch.Tensor  # (n_image_tokens,) where the visual tokens go
    truncated: bool = False  # max_length cut the conversation's end


def _render(tokenizer, msgs: list[dict[str, str]], n_image_tokens: int, generation_prompt: bool) -> list[int]:
    text = tokenizer.apply_chat_template(msgs, tokenize=False, add_generation_prompt=generation_prompt)
    text = text.replace(IMAGE_TOKEN, IMAGE_TOKEN * n_image_tokens)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def encode_chat(tokenizer, turns: Sequence[tuple[str, str]], n_image_tokens: int, system: str | None = None,
                max_length: int | None = None) -> EncodedChat:  # fmt: skip
    """One conversation about one image, tokenised in the tokenizer's chat template with its loss mask.

    ``max_length`` cuts the conversation's end (later turns); a cut through the image is an error.
    """
    image_id = add_image_token(tokenizer)
    msgs = messages(turns, system, image=n_image_tokens > 0)
    ids = _render(tokenizer, msgs, n_image_tokens, generation_prompt=False)
    labels = [IGNORE] * len(ids)
    for i, message in enumerate(msgs):
        if message["role"] != "assistant":
            continue
        start = len(_render(tokenizer, msgs[:i], n_image_tokens, generation_prompt=True))
        upto = _render(tokenizer, msgs[: i + 1], n_image_tokens, generation_prompt=False)
        if ids[: len(upto)] != upto or start > len(upto):
            raise ValueError(
                "the tokenizer's chat template does not render a conversation's beginning as the beginning of its "
                "text, so the assistant's replies cannot be located for the loss mask"
            )
        labels[start : len(upto)] = upto[start:]
    truncated = max_length is not None and len(ids) > max_length
    if truncated:
        ids, labels = ids[:max_length], labels[:max_length]
    positions = [k for k, t in enumerate(ids) if t == image_id]
    if len(positions) != n_image_tokens:
        raise ValueError(
            f"{len(positions)} of {n_image_tokens} image tokens left: max_length={max_length} cuts the image"
        )
    return EncodedChat(torch.tensor(ids), torch.tensor(labels), torch.tensor(positions, dtype=torch.long), truncated)


def encode_prompt(tokenizer, question: str, n_image_tokens: int, system: str | None = None) -> EncodedChat:
    """A question about an image, ending with the assistant's turn opened: what ``generate`` continues."""
    image_id = add_image_token(tokenizer)
    msgs = messages([(question, "")], system, image=n_image_tokens > 0)[:-1]
    ids = _render(tokenizer, msgs, n_image_tokens, generation_prompt=True)
    positions = [k for k, t in enumerate(ids) if t == image_id]
    return EncodedChat(torch.tensor(ids), torch.full((len(ids),), IGNORE), torch.tensor(positions, dtype=torch.long))


def collate(batch: Sequence[EncodedChat], pad_id: int, left_pad: bool = False) -> dict[str, torch.Tensor]:
    """Pad a batch (right for training, left for generation): input_ids, attention_mask, labels, image_positions.

    All examples must carry the same number of image tokens; positions are shifted with left padding.
    """
    length = max(len(e.input_ids) for e in batch)
    ids = torch.full((len(batch), length), pad_id)
    labels = torch.full((len(batch), length), IGNORE)
    mask = torch.zeros((len(batch), length), dtype=torch.long)
    positions = []
    for row, e in enumerate(batch):
        n = len(e.input_ids)
        span = slice(length - n, length) if left_pad else slice(0, n)
        ids[row, span], labels[row, span], mask[row, span] = e.input_ids, e.labels, 1
        positions.append(e.image_positions + (length - n if left_pad else 0))
    if len({len(p) for p in positions}) > 1:
        raise ValueError(f"examples carry different numbers of image tokens: {sorted({len(p) for p in positions})}")
    return {"input_ids": ids, "attention_mask": mask, "labels": labels, "image_positions": torch.stack(positions)}
