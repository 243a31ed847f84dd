"""Tests for mmhelpers.caption_tokenizer: training, encode/decode, <unk>, truncation, save/load, bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from mmhelpers.caption_tokenizer import CaptionTokenizer, caption_words, train_caption_tokenizer
from mmhelpers.errors import DataError

CAPTIONS = [
    "A dog runs on the grass.",
    "a brown dog runs on the grass",
    "Two children play in the park!",
    "two brown children play in a park",
    "A man rides a bike on the road",
    "a man is riding a red bike",
    "A zebra stands alone",  # zebra, stands, alone: seen once
]


@pytest.fixture(scope="module")
def tok() -> CaptionTokenizer:
    return train_caption_tokenizer(CAPTIONS, vocab_size=100, min_frequency=2)


def test_specials_and_vocab(tok: CaptionTokenizer) -> None:
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.unk_id) == (0, 1, 2, 3)
    assert tok.decode([[4]]) == ["a"]  # the most frequent word comes first
    words = {w for c in CAPTIONS for w in caption_words(c)}
    counts = {w: sum(caption_words(c).count(w) for c in CAPTIONS) for w in words}
    assert tok.vocab_size == 4 + sum(n >= 2 for n in counts.values())


def test_words_lowercase_and_drop_punctuation(tok: CaptionTokenizer) -> None:
    assert tok.words("A dog's ball, in the  PARK!") == ["a", "dog", "s", "ball", "in", "the", "park"]


def test_round_trip_of_in_vocab_captions(tok: CaptionTokenizer) -> None:
    texts = ["A dog runs on the grass.", "two children play in the park"]
    ids = tok.encode(texts, max_len=10)
    assert ids.shape == (2, 10) and ids.dtype == torch.long
    assert ids[0, 0] == tok.bos_id and ids[0, 7] == tok.eos_id and (ids[0, 8:] == tok.pad_id).all()
    assert tok.decode(ids) == ["a dog runs on the grass", "two children play in the park"]
    assert tok.encode("a dog", max_len=5).shape == (1, 5)


def test_rare_words_become_unk(tok: CaptionTokenizer) -> None:
    ids = tok.encode(["a zebra runs"], max_len=6)[0]
    assert ids.tolist() == [tok.bos_id, ids[1].item(), tok.unk_id, ids[3].item(), tok.eos_id, tok.pad_id]
    assert tok.decode(ids) == ["a <unk> runs"]


def test_truncation_keeps_eos(tok: CaptionTokenizer) -> None:
    ids = tok.encode(["a brown dog runs on the grass"], max_len=5)[0]
    assert ids.tolist()[0] == tok.bos_id and ids.tolist()[-1] == tok.eos_id
    assert tok.decode(ids) == ["a brown dog"]
    with pytest.raises(ValueError, match="max_len"):
        tok.encode(["a dog"], max_len=2)


def test_decode_stops_at_eos_and_skips_specials(tok: CaptionTokenizer) -> None:
    a, dog = tok.encode(["a dog"], max_len=4)[0, 1:3].tolist()
    assert tok.decode(torch.tensor([tok.bos_id, a, tok.pad_id, dog, tok.eos_id, a, dog])) == ["a dog"]
    assert tok.decode([[tok.eos_id, a]]) == [""]


def test_save_load_gives_identical_ids(tok: CaptionTokenizer, tmp_path: Path) -> None:
    path = tok.save(tmp_path / "sub" / "tokenizer.json")
    again = CaptionTokenizer.load(path)
    assert again.vocab_size == tok.vocab_size
    assert torch.equal(again.encode(CAPTIONS, 12), tok.encode(CAPTIONS, 12))
    assert [p.name for p in path.parent.iterdir()] == ["tokenizer.json"]  # no temporary file left


def test_training_is_deterministic_and_order_free() -> None:
    a = train_caption_tokenizer(CAPTIONS, vocab_size=100)
    b = train_caption_tokenizer(CAPTIONS[::-1], vocab_size=100)
    assert a.tokenizer.get_vocab() == b.tokenizer.get_vocab()
    small = train_caption_tokenizer(CAPTIONS, vocab_size=8, min_frequency=1)
    assert small.vocab_size == 8


def test_empty_captions_raise_clear_errors(tok: CaptionTokenizer) -> None:
    with pytest.raises(DataError, match="caption 1 has no words"):
        tok.encode(["a dog", "  ?! "], max_len=8)
    with pytest.raises(DataError, match="caption 0 has no words"):
        train_caption_tokenizer([""])
    with pytest.raises(ValueError, match="no captions"):
        train_caption_tokenizer([])
    with pytest.raises(ValueError, match="vocab_size"):
        train_caption_tokenizer(CAPTIONS, vocab_size=4)


def test_load_rejects_missing_and_foreign_files(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="not found"):
        CaptionTokenizer.load(tmp_path / "nope.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not a caption tokenizer"):
        CaptionTokenizer.load(bad)
