"""A word-level caption tokenizer that the project trains, built on Hugging Face ``tokenizers``.

Why word-level: captions use a small, repetitive vocabulary, a word-level vocabulary with a minimum
frequency and ``<unk>`` is the easiest to read (one id per word, decoded text is a list of words), and it
splits text exactly as the caption metrics do, so BLEU and CIDEr score the words the model predicts.
BPE or WordPiece would avoid ``<unk>`` but add sub-word pieces that a small model must learn to join.

Words are ``mmhelpers.text.simple_word_tokenize``: lowercase runs of letters and digits; punctuation and
whitespace split and are dropped ("A dog's ball." -> a, dog, s, ball). The word split runs in Python
before the Hugging Face tokenizer, which only maps words to ids (its saved file also lowercases and splits
on whitespace, so it reads our pre-split text the same way on its own).

Ids: ``<pad>`` = 0, ``<bos>`` = 1, ``<eos>`` = 2, ``<unk>`` = 3, then words by descending training frequency
(ties alphabetical). ``encode`` gives ``<bos> words <eos> <pad>...``; too long a caption loses its last
words, never its ``<eos>``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers

from .atomic import atomic_open
from .errors import DataError
from .text import simple_word_tokenize

SPECIAL_TOKENS = ("<pad>", "<bos>", "<eos>", "<unk>")


def caption_words(text: str) -> list[str]:
    """The word split shared by the tokenizer and the caption metrics: lowercase letters and digits."""
    if not isinstance(text, str):
        raise TypeError(f"caption must be str, got {type(text).__name__}")
    return simple_word_tokenize(text)


def _words_or_raise(text: str, index: int) -> list[str]:
    """The words of caption ``index``; DataError if it has none."""
    words = caption_words(text)
    if not words:
        raise DataError(None, f"caption {index} has no words (only spaces or punctuation): {text!r}")
    return words


class CaptionTokenizer:
    """Word ids for captions: encode to padded LongTensors with BOS/EOS, decode back to text."""

    pad_id, bos_id, eos_id, unk_id = 0, 1, 2, 3

    def __init__(self, tokenizer: Tokenizer):
        vocab = tokenizer.get_vocab()
        for i, tok in enumerate(SPECIAL_TOKENS):
            if vocab.get(tok) != i:
                raise ValueError(f"tokenizer must map {tok!r} to id {i}, got {vocab.get(tok)}")
        self.tokenizer = tokenizer
        self._id_to_word = [w for w, _ in sorted(vocab.items(), key=lambda kv: kv[1])]

    @property
    def vocab_size(self) -> int:
        """Number of ids, special tokens included."""
        return len(self._id_to_word)

    def words(self, text: str) -> list[str]:
        """The word split used for both encoding and the caption metrics."""
        return caption_words(text)

    def encode(self, texts: str | Sequence[str], max_len: int) -> torch.Tensor:
        """(B, max_len) ids: <bos>, words (unknown ones as <unk>), <eos>, then <pad>; truncation keeps <eos>."""
        if max_len < 3:
            raise ValueError(f"max_len must be at least 3 (<bos>, one word, <eos>), got {max_len}")
        batch = [texts] if isinstance(texts, str) else list(texts)
        words = [_words_or_raise(t, i) for i, t in enumerate(batch)]
        encs = self.tokenizer.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
        ids = torch.full((len(batch), max_len), self.pad_id, dtype=torch.long)
        for row, enc in enumerate(encs):
            seq = [self.bos_id, *enc.ids[: max_len - 2], self.eos_id]
            ids[row, : len(seq)] = torch.tensor(seq)
        return ids

    def decode(self, ids: torch.Tensor | Sequence[Sequence[int]] | Sequence[int]) -> list[str]:
        """One string per row: words up to the first <eos>, <pad>/<bos> dropped, unknown words shown as <unk>."""
        rows = torch.as_tensor(ids)
        rows = rows.unsqueeze(0) if rows.ndim == 1 else rows
        out = []
        for row in rows.tolist():
            words = []
            for i in row:
                if i == self.eos_id:
                    break
                if i not in (self.pad_id, self.bos_id):
                    words.append(self._id_to_word[i])
            out.append(" ".join(words))
        return out

    def save(self, path: str | Path) -> Path:
        """Write the Hugging Face tokenizer JSON atomically and return the path."""
        with atomic_open(path, "w") as f:
            f.write(self.tokenizer.to_str())
        return Path(path)

    @classmethod
    def load(cls, path: str | Path) -> CaptionTokenizer:
        """Read a tokenizer saved by ``save``; DataError if missing or not one of ours."""
        path = Path(path)
        if not path.is_file():
            raise DataError(path, "tokenizer file not found")
        try:
            return cls(Tokenizer.from_file(str(path)))
        except Exception as exc:  # tokenizers raises a bare Exception for unreadable JSON
            raise DataError(path, f"not a caption tokenizer file: {exc}") from exc


def train_caption_tokenizer(
    captions: Sequence[str], vocab_size: int = 3000, min_frequency: int = 2
) -> CaptionTokenizer:
    """Word vocabulary of at most ``vocab_size`` ids (specials included) of words seen ``min_frequency`` times."""
    if len(captions) == 0:
        raise ValueError("no captions to train the tokenizer on")
    if vocab_size <= len(SPECIAL_TOKENS):
        raise ValueError(f"vocab_size must exceed the {len(SPECIAL_TOKENS)} special tokens, got {vocab_size}")
    texts = [" ".join(_words_or_raise(c, i)) for i, c in enumerate(captions)]
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    trainer = trainers.WordLevelTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                        special_tokens=list(SPECIAL_TOKENS), show_progress=False)  # fmt: skip
    tok.train_from_iterator(texts, trainer=trainer)
    return CaptionTokenizer(tok)
