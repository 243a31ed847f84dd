"""Tests for mmhelpers.data.folders: users' own folders, tables and LLaVA files, written here the way users write
them (OpenCV, Pillow, soundfile, csv, json, pyarrow; never the cookbook's loaders), read back, loaded as tensors,
and every validation error named by file and line."""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import soundfile as sf
import torch
from PIL import Image

from mmhelpers.data.folders import (
    Conversation,
    load_clips,
    load_images,
    read_folder,
    read_llava,
    read_table,
)
from mmhelpers.errors import DataError

# --- writers: what a user's own tools leave on disk -------------------------------------------------


def png(path: Path, kind: str = "rgb", h: int = 12, w: int = 16, value: int = 200) -> Path:
    """A uniform PNG: "grey" (H, W), "rgb" red, "rgba" green with half alpha, "grey16" 16-bit, or "pil" blue."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "pil":
        Image.new("RGB", (w, h), (0, 0, value)).save(path)
        return path
    img = {
        "grey": np.full((h, w), value, np.uint8),
        "rgb": np.dstack([np.zeros((h, w, 2), np.uint8), np.full((h, w), value, np.uint8)]),  # BGR: red
        "rgba": np.dstack(
            [
                np.zeros((h, w), np.uint8),
                np.full((h, w), value, np.uint8),
                np.zeros((h, w), np.uint8),
                np.full((h, w), 128, np.uint8),
            ]
        ),  # fmt: skip
        "grey16": np.full((h, w), 65535, np.uint16),
    }[kind]
    assert cv2.imwrite(str(path), img)
    return path


def wav(path: Path, sr: int, seconds: float = 0.25, freq: float = 440.0, channels: int = 1) -> Path:
    """A sine WAV (16-bit PCM) at ``sr``; stereo files get the sine on the left and half of it on the right."""
    path.parent.mkdir(parents=True, exist_ok=True)
    t = np.arange(round(sr * seconds)) / sr
    tone = 0.5 * np.sin(2 * np.pi * freq * t)
    sf.write(path, tone if channels == 1 else np.stack([tone, tone / 2], axis=1), sr, subtype="PCM_16")
    return path


def write_csv(path: Path, rows: list[list[str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(rows)
    return path


def write_jsonl(path: Path, records: list) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def raises(match_all: list[str], fn, *args, **kwargs) -> str:
    """Call ``fn`` expecting a DataError whose message holds every string of ``match_all``; return the message."""
    with pytest.raises(DataError) as info:
        fn(*args, **kwargs)
    message = str(info.value)
    for part in match_all:
        assert part in message, f"{part!r} not in {message!r}"
    return message


# --- layouts read back ---------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [8, 12])
def test_class_per_subfolder_labels_are_folder_names_sorted(tmp_path: Path, n_classes: int) -> None:
    root = tmp_path / "pets"
    names = [f"class{i}" for i in range(n_classes)]  # string order: class0, class1, class10, class11, class2, ...
    kinds = ["grey", "rgb", "rgba", "pil"]
    for i, name in enumerate(names):
        png(root / name / "a.png", kinds[i % 4])
        png(root / name / "deeper" / "b.png", kinds[(i + 1) % 4], h=20, w=9)
    (root / "class3" / "notes.txt").write_text("not an image")
    (root / ".DS_Store").write_bytes(b"\0")

    recs = read_folder(root, kind="image")
    ids, classes = recs.labels()
    assert classes == sorted(names) and len(classes) == n_classes
    if n_classes == 12:
        assert classes[:4] == ["class0", "class1", "class10", "class11"]
    assert len(recs) == 2 * n_classes and recs.source == root and recs.path_columns == ("file_name",)
    assert ids.dtype == torch.long and ids.tolist() == [i for i in range(n_classes) for _ in range(2)]
    first = recs.rows[0]
    assert first == {"file_name": str(root / classes[0] / "a.png"), "label": classes[0]}
    assert recs.paths()[1] == root / classes[0] / "deeper" / "b.png"
    with_text = read_folder(root)  # kind=None keeps every visible file, the .txt too
    assert len(with_text) == 2 * n_classes + 1


@pytest.mark.parametrize("meta", ["metadata.csv", "metadata.jsonl"])
def test_imagefolder_metadata_round_trip(tmp_path: Path, meta: str) -> None:
    root = tmp_path / "shop"
    rows = []
    for i in range(24):  # labels 0..11 as numbers: ids follow numeric order, not "0", "1", "10", ...
        png(root / "img" / f"{i:02d}.png", ["grey", "rgb", "rgba"][i % 3])
        rows.append({"file_name": f"img/{i:02d}.png", "label": str(11 - i % 12), "caption": f"item, number {i}"})
    if meta == "metadata.csv":
        write_csv(root / meta, [list(rows[0])] + [list(r.values()) for r in rows])
    else:
        write_jsonl(root / meta, [{**r, "label": int(r["label"])} for r in rows])  # JSON numbers become strings

    recs = read_folder(root)
    assert recs.source == root / meta and recs.root == root and len(recs) == 24
    assert recs.column("file_name") == [str(root / r["file_name"]) for r in rows]
    assert recs.column("caption")[3] == "item, number 3"
    ids, names = recs.labels()
    assert names == [str(i) for i in range(12)]
    assert ids.tolist() == [11 - i % 12 for i in range(24)]
    assert recs.where[:2] == (["line 2", "line 3"] if meta.endswith(".csv") else ["line 1", "line 2"])
    captions_only = read_folder(root, label_column=None)
    assert captions_only.label_column is None and len(captions_only) == 24


def test_table_csv_and_parquet_hold_the_same_rows(tmp_path: Path) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    root = tmp_path / "av"
    outside = png(tmp_path / "elsewhere" / "abs.png", "rgb")
    header = ["image", "audio", "text", "label", "speaker"]
    body = []
    for i in range(8):
        png(root / "images" / f"{i}.png", "grey")
        wav(root / "audio" / f"{i}.wav", [8000, 16000, 44100][i % 3])
        image = str(outside) if i == 7 else f"images/{i}.png"  # an absolute path is kept
        body.append([image, f"audio/{i}.wav", f"digit {i}", ["cat", "dog", "bird", "fish"][i % 4], f"s{i % 2}"])
    write_csv(root / "table.csv", [header, *body])
    pq.write_table(pa.table({c: [r[j] for r in body] for j, c in enumerate(header)}), root / "table.parquet")

    from_csv = read_table(root / "table.csv", paths=("image", "audio"))
    from_parquet = read_table(root / "table.parquet", paths=("image", "audio"))
    assert from_csv.rows == from_parquet.rows and from_parquet.where[0] == "row 1"
    assert from_csv.column("image")[0] == str(root / "images" / "0.png")
    assert from_csv.column("image")[7] == str(outside)
    assert from_csv.column("audio")[2] == str(root / "audio" / "2.wav")
    ids, names = from_csv.labels()
    assert names == ["bird", "cat", "dog", "fish"] and ids.tolist() == [1, 2, 0, 3, 1, 2, 0, 3]
    groups = from_csv.groups("speaker")
    assert isinstance(groups, np.ndarray) and groups.tolist() == [0, 1] * 4
    with pytest.raises(ValueError, match="path columns"):
        from_csv.paths()  # two path columns: say which
    # The same table read from another folder: paths resolve against root=.
    moved = write_csv(tmp_path / "moved.csv", [header, *body[:2]])
    assert read_table(moved, paths=("image",), root=root).column("image")[1] == str(root / "images" / "1.png")


def test_llava_jsonl_and_json_list(tmp_path: Path) -> None:
    images = tmp_path / "coco"
    png(images / "a.png", "rgb")
    png(images / "b.png", "grey")
    records = [
        {"id": "q1", "image": "a.png", "conversations": [
            {"from": "human", "value": "<image>\nWhat colour is the square?"}, {"from": "gpt", "value": "Red."},
            {"from": "human", "value": "Is it big?"}, {"from": "gpt", "value": "No."}]},
        {"id": 7, "image": "b.png", "type": "caption", "score": 2, "tags": ["x"], "conversations": [
            {"from": "human", "value": "Describe the image.\n<image>"}, {"from": "gpt", "value": "A grey field."}]},
    ]  # fmt: skip
    lines = write_jsonl(images / "train.jsonl", records)
    (tmp_path / "llava.json").write_text(json.dumps(records, indent=2))

    convs = read_llava(lines)
    assert convs == read_llava(tmp_path / "llava.json", image_root=images)
    assert convs[0] == Conversation(
        "q1", images / "a.png", [("What colour is the square?", "Red."), ("Is it big?", "No.")]
    )
    assert convs[1].id == "7" and convs[1].turns == [("Describe the image.", "A grey field.")]
    assert convs[1].meta == {"type": "caption", "score": "2"} and convs[0].meta == {}  # plain fields, as text


# --- tensors -----------------------------------------------------------------------------------------


def test_load_images_converts_mixed_images(tmp_path: Path) -> None:
    paths = [png(tmp_path / "grey.png", "grey", 10, 30, value=100), png(tmp_path / "red.png", "rgb", 40, 20),
             png(tmp_path / "rgba.png", "rgba", 7, 7), png(tmp_path / "g16.png", "grey16"),
             png(tmp_path / "blue.png", "pil", 64, 48)]  # fmt: skip
    x = load_images(paths, 16)
    assert x.shape == (5, 3, 16, 16) and x.dtype == torch.float32 and 0 <= x.min() and x.max() <= 1
    assert torch.allclose(x[0], torch.full((3, 16, 16), 100 / 255))  # grey repeated over RGB
    assert x[1, 0].mean() == pytest.approx(200 / 255) and x[1, 1:].abs().max() == 0  # red stays red
    assert x[2, 1].mean() == pytest.approx(200 / 255) and x[2, [0, 2]].abs().max() == 0  # alpha dropped
    assert x[3].min() == 1.0  # 16-bit white is white
    assert x[4, 2].mean() == pytest.approx(200 / 255)
    g = load_images(paths, 8, channels=1, crop=False)
    assert g.shape == (5, 1, 8, 8)
    assert g[1].mean() == pytest.approx(round(0.299 * 200) / 255, abs=1 / 255)  # luma of red


def test_load_images_crops_the_centre_or_squashes(tmp_path: Path) -> None:
    stripes = np.zeros((20, 60), np.uint8)
    stripes[:, 20:40] = 255  # a white middle third on black
    cv2.imwrite(str(tmp_path / "wide.png"), stripes)
    cropped = load_images([tmp_path / "wide.png"], 20, channels=1)[0, 0]
    squashed = load_images([tmp_path / "wide.png"], 20, channels=1, crop=False)[0, 0]
    assert cropped.min() == 1.0  # only the middle survives the centre crop
    assert squashed[:, :5].max() == 0 and squashed[:, 8:12].min() == 1.0  # the whole width, squeezed


def test_load_clips_resamples_mixes_and_centres(tmp_path: Path) -> None:
    paths = [wav(tmp_path / "a.wav", 44100, 1.0), wav(tmp_path / "b.wav", 8000, 0.5),
             wav(tmp_path / "c.wav", 16000, 2.0, 441.0), wav(tmp_path / "st.wav", 16000, 1.0, 200.0, channels=2)]  # fmt: skip
    x = load_clips(paths, 16000, 1.0)
    assert x.shape == (4, 16000) and x.dtype == torch.float32
    spectrum = torch.fft.rfft(x[0]).abs()
    assert abs(int(spectrum.argmax()) - 440) <= 2  # 1 s window: bin k is k Hz
    # 0.5 s at 8 kHz -> 8000 samples at 16 kHz, centred: 4000 zeros on each side.
    assert x[1, :3990].abs().max() == 0 and x[1, -3990:].abs().max() == 0 and x[1, 4100:11900].abs().max() > 0.4
    # 2 s cropped to its middle second: sample 0 of the window is sample 8000 of the clip (441 Hz: the phase
    # there is opposite to the phase at sample 0, so a crop from the start would fail).
    t = np.arange(8000, 24000) / 16000
    assert torch.allclose(x[2], torch.tensor(0.5 * np.sin(2 * np.pi * 441 * t), dtype=torch.float32), atol=1e-3)
    # Stereo (sine, sine / 2) is averaged to 0.75 of the sine.
    assert x[3].abs().max() == pytest.approx(0.375, abs=2e-3)


def test_progress_bar_on_request(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    load_images([png(tmp_path / "a.png")], 8, progress=True)
    load_clips([wav(tmp_path / "a.wav", 8000)], 8000, 0.1)  # short list: no bar by default
    err = capsys.readouterr().err
    assert "images" in err and "clips" not in err


def test_undecodable_files_raise_the_loaders_data_error(tmp_path: Path) -> None:
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    (tmp_path / "broken.wav").write_bytes(b"RIFF....WAVEjunk")
    raises(["broken.png"], load_images, [png(tmp_path / "ok.png"), tmp_path / "broken.png"], 8)
    raises(["broken.wav"], load_clips, [tmp_path / "broken.wav"], 16000, 1.0)


# --- validation: every error names the file and the line -------------------------------------------------


@pytest.fixture
def shop(tmp_path: Path) -> Path:
    """A folder with four images a.png .. d.png and no metadata yet."""
    for name in "abcd":
        png(tmp_path / "shop" / f"{name}.png")
    return tmp_path / "shop"


def test_metadata_errors_name_file_and_line(shop: Path) -> None:
    meta = shop / "metadata.csv"
    write_csv(meta, [["file", "label"], ["a.png", "x"]])
    raises(["metadata.csv", "missing column(s) 'file_name'", "file, label"], read_folder, shop)
    write_csv(meta, [["file_name", "label"], ["a.png", "x"], ["missing.png", "y"]])
    raises(["metadata.csv", "line 3", "'missing.png' not found", str(shop / "missing.png")], read_folder, shop)
    write_csv(meta, [["file_name", "label"], ["a.png", "x"], ["b.png", "y"], ["c.png", " "]])
    raises(["metadata.csv", "line 4", "empty 'label'"], read_folder, shop)
    write_csv(meta, [["file_name", "label"], ["a.png", "x"], ["b.png", "y"], ["c.png", "y"], ["a.png", "x"]])
    raises(["metadata.csv", "line 5 repeats line 2"], read_folder, shop)
    write_csv(meta, [["file_name", "label"], ["a.png", "x"], ["a.png", "y"]])  # same file, other label: allowed
    assert len(read_folder(shop)) == 2
    write_csv(meta, [["file_name", "label"]])
    raises(["metadata.csv", "no rows"], read_folder, shop)
    write_jsonl(shop / "metadata.jsonl", [{"file_name": "a.png"}])
    raises(["metadata.csv and metadata.jsonl", "keep one"], read_folder, shop)


@pytest.mark.parametrize(
    ("text", "line", "problem"),
    [
        ('file_name,text\na.png,"fine"\nb.png,"never closed\nc.png,x\n', 3, "unterminated quote"),
        ('file_name,text\na.png,ok\nb.png,"open\n', 3, "unterminated quote"),
        ('file_name,text\na.png,ok\nb.png,"two\nlines"\nc.png,x\n', 3, "runs on to line 4"),
        ("file_name,text\na.png,ok\n\nb.png,o\x00k\n", 4, "NUL byte"),
        ('file_name,text\na.png,x"y"z\nb.png,"a"b\n', 3, "malformed CSV"),
        ("file_name,text\na.png,ok\nb.png,one,two\n", 3, "3 fields, but the header (line 1) has 2"),
        ("file_name,text\na.png,caf\xe9\n", 2, "not UTF-8"),
    ],
)
def test_malformed_csv_names_the_line(shop: Path, text: str, line: int, problem: str) -> None:
    (shop / "metadata.csv").write_bytes(text.encode("latin-1"))
    raises(["metadata.csv", f"line {line}:", problem], read_folder, shop, label_column=None)


def test_jsonl_errors_name_the_line(shop: Path) -> None:
    meta = shop / "metadata.jsonl"
    meta.write_text('{"file_name": "a.png", "label": "x"}\n\n{"file_name": "b.png", "label": "y",}\n')
    raises(["metadata.jsonl", "line 3", "not valid JSON"], read_folder, shop)
    meta.write_text('{"file_name": "a.png", "label": "x"}\n["b.png", "y"]\n')
    raises(["metadata.jsonl", "line 2", "expected an object"], read_folder, shop)
    meta.write_text('{"file_name": "a.png", "label": "x"}\n{"label": "y"}\n')
    raises(["metadata.jsonl", "line 2", "no 'file_name'"], read_folder, shop)
    meta.write_text('{"file_name": "a.png", "label": "x"}\n{"file_name": "b.png", "label": null}\n')
    raises(["metadata.jsonl", "line 2", "empty 'label'"], read_folder, shop)


def test_parquet_errors_name_the_row_and_a_missing_pyarrow(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    png(tmp_path / "a.png")
    table = tmp_path / "t.parquet"
    pq.write_table(pa.table({"image": ["a.png", "a.png", "gone.png"], "label": ["x", "y", "z"]}), table)
    raises(["t.parquet", "row 3", "'gone.png' not found"], read_table, table)
    (tmp_path / "bad.parquet").write_bytes(b"PAR1 not parquet")
    raises(["bad.parquet", "not a readable Parquet file"], read_table, tmp_path / "bad.parquet")
    monkeypatch.setitem(sys.modules, "pyarrow", None)  # as if not installed
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="pip install pyarrow"):
        read_table(table)


def test_table_and_records_errors(tmp_path: Path) -> None:
    png(tmp_path / "a.png")
    raises(["t.xlsx", "unknown table format"], read_table, tmp_path / "t.xlsx")
    raises(["nope.csv", "not found"], read_table, tmp_path / "nope.csv")
    (tmp_path / "empty.csv").write_text("\n\n")
    raises(["empty.csv", "empty file"], read_table, tmp_path / "empty.csv")
    table = write_csv(tmp_path / "t.csv", [["image", "label", "speaker"], ["a.png", "x", ""]])
    recs = read_table(table)
    raises(["t.csv", "no column 'colour'", "image, label, speaker"], recs.column, "colour")
    raises(["t.csv", "line 2", "empty 'speaker'"], recs.labels, "speaker")
    (tmp_path / "list.json").write_text('[{"image": "a.png", "label": "x"},\n {"image": "a.png", "label": "x"}]')
    raises(["list.json", "record 2 repeats record 1"], read_table, tmp_path / "list.json")
    (tmp_path / "broken.json").write_text('[{"image": "a.png",\n "label": x}]')
    raises(["broken.json", "line 2", "not valid JSON"], read_table, tmp_path / "broken.json")


def test_folder_layout_errors(tmp_path: Path) -> None:
    (tmp_path / "empty" / ".ipynb_checkpoints").mkdir(parents=True)
    raises(["empty", "empty folder"], read_folder, tmp_path / "empty")
    raises(["absent", "folder not found"], read_folder, tmp_path / "absent")
    mixed = tmp_path / "mixed"
    png(mixed / "cat" / "1.png")
    png(mixed / "dog" / "1.png")
    png(mixed / "stray.png")
    raises(["mixed", "files at the top level next to class subfolders: stray.png"], read_folder, mixed)
    png(tmp_path / "flat" / "1.png")
    raises(["flat", "no class subfolders", "label_column=None"], read_folder, tmp_path / "flat")
    assert read_folder(tmp_path / "flat", label_column=None).column("file_name") == [str(tmp_path / "flat" / "1.png")]
    (tmp_path / "sounds" / "dog").mkdir(parents=True)
    png(tmp_path / "sounds" / "dog" / "photo.png")
    raises([str(tmp_path / "sounds" / "dog"), "holds no audio files"], read_folder, tmp_path / "sounds", kind="audio")


@pytest.mark.parametrize(
    ("record", "problem"),
    [
        ({"id": 1, "conversations": [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}]}, "no 'image'"),
        ({"image": "a.png", "conversations": []}, "non-empty list"),
        ({"image": "a.png", "conversations": [{"from": "human", "value": "<image>\nWhat?"}]}, "1 turns"),
        ({"image": "a.png", "conversations": [{"from": "gpt", "value": "x"}, {"from": "human", "value": "y"}]},
         "turn 1 is from 'gpt'"),
        ({"image": "a.png", "conversations": [{"from": "human", "value": "<image>"}, {"from": "gpt", "value": "y"}]},
         "turn 1 has an empty 'value'"),
        ({"image": "gone.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]},
         "'gone.png' not found"),
    ],
)  # fmt: skip
def test_llava_errors_name_the_line_or_record(tmp_path: Path, record: dict, problem: str) -> None:
    png(tmp_path / "a.png")
    good = {"image": "a.png", "conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"}]}
    write_jsonl(tmp_path / "chat.jsonl", [good, good, record])
    raises(["chat.jsonl", "line 3", problem], read_llava, tmp_path / "chat.jsonl")
    (tmp_path / "chat.json").write_text(json.dumps([good, record]))
    raises(["chat.json", "record 2", problem], read_llava, tmp_path / "chat.json")
