"""Your own data, in layouts you already know, read strictly: folders, tables and LLaVA conversations.

Three layouts:

- ``read_folder``: a Hugging Face imagefolder / audiofolder (``metadata.csv``, ``metadata.jsonl`` or
  ``metadata.parquet`` with a ``file_name`` column of paths relative to the folder, plus any label or text
  columns), or, without a metadata file, torchvision's class-per-subfolder ``root/<class>/<file>``.
- ``read_table``: a CSV, TSV, JSONL, JSON list or Parquet table with one column per modality (file paths
  relative to the table's folder, or absolute) and a label column.
- ``read_llava``: LLaVA conversations (a ``.json`` list or ``.jsonl``) for captioning and VQA.

Every problem is a DataError that names the file, the 1-based line (CSV, JSONL), row (Parquet) or record
(JSON list) and what is wrong: a missing column, a referenced file that does not exist, an empty label,
a row repeated verbatim, malformed CSV or JSON, an empty folder, files mixed in beside class folders.
``load_images`` and ``load_clips`` then turn paths into batched tensors, converting what is merely
different (grey and colour images of any size, audio at any sample rate, stereo) instead of refusing it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from mmhelpers.audio import centre_window, load_audio
from mmhelpers.errors import DataError
from mmhelpers.image import load_image, resize, resize_shorter_then_center_crop, to_tensor

METADATA_FILES = ("metadata.csv", "metadata.jsonl", "metadata.parquet")  # as Hugging Face imagefolder
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg", ".mp3", ".aif", ".aiff")
PROGRESS_FROM = 256  # progress=None shows a bar from this many files on
_TABLE_FORMATS = (".csv", ".tsv", ".jsonl", ".json", ".parquet", ".pq")
_QUESTION_ROLES = ("human", "user")  # LLaVA writes human/gpt; ShareGPT-style files user/assistant
_ANSWER_ROLES = ("gpt", "assistant")


@dataclass
class Records:
    """Rows of a table or folder: every value a string, file-path columns resolved to absolute paths."""

    source: Path  # the metadata or table file, or the folder of a class-per-subfolder layout
    root: Path  # relative paths were resolved against this folder
    rows: list[dict[str, str]]
    path_columns: tuple[str, ...]
    label_column: str | None = None
    where: list[str] = field(default_factory=list)  # each row's place in ``source``, e.g. "line 3"

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def columns(self) -> list[str]:
        """Column names, in the order they first appear."""
        return list(dict.fromkeys(name for row in self.rows for name in row))

    def column(self, name: str) -> list[str]:
        """Every row's value of column ``name``; a DataError naming the source lists the columns there are."""
        columns = self.columns
        if name not in columns:
            raise DataError(self.source, f"no column {name!r}; the columns are {', '.join(columns)}")
        return [row.get(name, "") for row in self.rows]

    def paths(self, column: str | None = None) -> list[Path]:
        """The files of a path column (default: the only one)."""
        if column is None:
            if len(self.path_columns) != 1:
                raise ValueError(f"name one of the path columns {self.path_columns}")
            column = self.path_columns[0]
        return [Path(value) for value in self.column(column)]

    def labels(self, column: str | None = None) -> tuple[torch.Tensor, list[str]]:
        """Class ids (N,) in 0..K-1 and the K class names, sorted (numerically when all are integers)."""
        column = column or self.label_column
        if column is None:
            raise ValueError("these records have no label column; pass column=")
        values = self.column(column)
        for i, value in enumerate(values):
            if not value:
                raise DataError(self.source, f"{self._where(i)}: empty {column!r}")
        ids, names = _ids(values)
        return torch.tensor(ids, dtype=torch.long), names

    def groups(self, column: str) -> np.ndarray:
        """Integer group ids (N,) of a column such as a speaker, for grouped splits (sklearn's GroupKFold)."""
        return np.asarray(_ids(self.column(column))[0], dtype=np.int64)

    def _where(self, i: int) -> str:
        return self.where[i] if self.where else f"row {i + 1}"


@dataclass
class Conversation:
    """One LLaVA record: its id, the image, (question, answer) turns with the ``<image>`` token removed, and the
    record's other plain fields as text (e.g. a question ``type`` to score by)."""

    id: str
    image: Path
    turns: list[tuple[str, str]]
    meta: dict[str, str] = field(default_factory=dict)


def read_folder(
    path: str | Path,
    *,
    file_column: str = "file_name",
    label_column: str | None = "label",
    kind: str | None = None,
) -> Records:
    """Read an imagefolder / audiofolder with a metadata file, else a class-per-subfolder layout.

    With ``metadata.csv`` / ``.jsonl`` / ``.parquet``, ``file_column`` holds paths relative to the folder and
    ``label_column`` (None: no labels, e.g. captions only) must be filled on every row. Without one, each
    subfolder is a class: the label (stored under ``label_column`` or "label") is the subfolder's name and
    its files are found recursively; ``kind`` ("image" or "audio") keeps only files of that kind. A folder
    of files with no subfolders is read unlabelled when ``label_column`` is None.
    """
    if kind not in (None, "image", "audio"):
        raise ValueError(f"kind must be 'image', 'audio' or None, got {kind!r}")
    folder = Path(os.path.abspath(path))
    if not folder.is_dir():
        raise DataError(folder, "not a folder" if folder.exists() else "folder not found")
    found = [folder / name for name in METADATA_FILES if (folder / name).is_file()]
    if len(found) > 1:
        raise DataError(folder, f"has {' and '.join(p.name for p in found)}; keep one metadata file")
    if found:
        return read_table(found[0], paths=(file_column,), label_column=label_column, root=folder)
    return _read_class_folders(folder, file_column, label_column, kind)


def read_table(
    path: str | Path,
    *,
    paths: Sequence[str] = ("image",),
    label_column: str | None = "label",
    root: str | Path | None = None,
) -> Records:
    """Read a table (.csv, .tsv, .jsonl, .json list of objects, .parquet) whose ``paths`` columns name files.

    Paths are relative to ``root`` (default: the table's folder) or absolute; each must be an existing
    file. ``label_column`` (None: none) must be filled on every row, and no row may repeat another
    exactly. CSV is read strictly, one row per line (a quoted field may not span lines). Parquet needs
    pyarrow, imported only then (an ImportError says to ``pip install pyarrow``).
    """
    source = Path(os.path.abspath(path))
    suffix = source.suffix.lower()
    if suffix not in _TABLE_FORMATS:
        raise DataError(source, f"unknown table format {suffix!r}; use one of {', '.join(_TABLE_FORMATS)}")
    if not source.is_file():
        raise DataError(source, "table file not found" if not source.exists() else "not a file")
    if suffix in (".csv", ".tsv"):
        columns, rows = _read_csv(source, "\t" if suffix == ".tsv" else ",")
    elif suffix in (".parquet", ".pq"):
        columns, rows = _objects_to_rows(source, _read_parquet(source))
    else:
        columns, rows = _objects_to_rows(source, _read_json_objects(source))
    folder = source.parent if root is None else Path(os.path.abspath(root))
    return _check_rows(source, folder, columns, rows, tuple(paths), label_column)


def read_llava(path: str | Path, *, image_root: str | Path | None = None) -> list[Conversation]:
    """Read LLaVA records (a ``.json`` list or ``.jsonl``), each with an image and question/answer turns.

    A record is ``{"id": ..., "image": "rel/path.jpg", "conversations": [{"from": "human", "value":
    "<image>\\nWhat is ...?"}, {"from": "gpt", "value": "..."}, ...]}``; turns alternate human/gpt
    (or user/assistant), starting with the human. Image paths are relative to ``image_root`` (default:
    the file's folder) or absolute.
    """
    source = Path(os.path.abspath(path))
    if not source.is_file():
        raise DataError(source, "LLaVA file not found" if not source.exists() else "not a file")
    root = source.parent if image_root is None else Path(os.path.abspath(image_root))
    records = _read_json_objects(source)
    if not records:
        raise DataError(source, "no records")
    return [_conversation(source, root, where, record) for where, record in records]


def load_images(
    paths: Sequence[str | Path], size: int, channels: int = 3, *, crop: bool = True, progress: bool | None = None
) -> torch.Tensor:
    """Load images of any size as a float (N, channels, size, size) batch in [0, 1].

    Grey, RGB and RGBA images, 8- or 16-bit, may be mixed: each is converted to ``channels`` (1: grey by
    luma, 3: RGB; grey is repeated, alpha dropped without compositing, 16-bit scaled to 8). ``crop=True``
    scales the shorter side to ``size`` and cuts the centre (aspect kept); ``crop=False`` squashes to
    size x size. An undecodable file raises load_image's DataError, naming it.
    """
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels!r}")
    fit = resize_shorter_then_center_crop if crop else resize
    out = torch.empty(len(paths), channels, size, size)
    for i, p in enumerate(tqdm(paths, desc="images", disable=not _show(progress, len(paths)))):
        out[i] = to_tensor(fit(load_image(p, mode="RGB" if channels == 3 else "L"), size))
    return out


def load_clips(paths: Sequence[str | Path], sr: int, seconds: float, *, progress: bool | None = None) -> torch.Tensor:
    """Load audio at any sample rate as a float (N, round(sr * seconds)) batch, mono, resampled to ``sr``.

    Channels are averaged; each clip is centred in the window: zero-padded equally on both sides when
    shorter, its middle kept when longer. An unreadable file raises load_audio's DataError, naming it.
    """
    n = round(sr * seconds)
    if n <= 0:
        raise ValueError(f"sr * seconds must be at least one sample, got {sr} * {seconds}")
    out = torch.empty(len(paths), n)
    for i, p in enumerate(tqdm(paths, desc="clips", disable=not _show(progress, len(paths)))):
        out[i] = centre_window(load_audio(p, sr=sr, mono=True)[0], n)
    return out


def _show(progress: bool | None, n: int) -> bool:
    """Whether to draw a progress bar: as asked, else for long lists only."""
    return n >= PROGRESS_FROM if progress is None else progress


def _ids(values: list[str]) -> tuple[list[int], list[str]]:
    """Ids 0..K-1 of the values and the K names, sorted as strings, or as numbers when all are integers."""
    names = sorted(set(values))
    if all(name.removeprefix("-").isdigit() for name in names):
        names.sort(key=int)
    index = {name: i for i, name in enumerate(names)}
    return [index[v] for v in values], names


def _lines(source: Path) -> list[str]:
    """The file's lines, strictly UTF-8 (a BOM allowed) and without NUL bytes; DataError naming the line."""
    raw = source.read_bytes().splitlines()
    if raw:
        raw[0] = raw[0].removeprefix(b"\xef\xbb\xbf")
    lines = []
    for n, data in enumerate(raw, start=1):
        try:
            line = data.decode("utf-8")
        except UnicodeDecodeError as exc:
            problem = f"line {n}: not UTF-8 (byte 0x{data[exc.start]:02x} at column {exc.start + 1})"
            raise DataError(source, problem) from exc
        if "\x00" in line:
            raise DataError(source, f"line {n}: NUL byte at column {line.index(chr(0)) + 1} (binary or corrupt file?)")
        lines.append(line)
    return lines


def _read_csv(source: Path, delimiter: str) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Header and (where, row) pairs of a CSV read strictly, one row per line; blank lines skipped."""
    lines = _lines(source)
    if not any(line.strip() for line in lines):
        raise DataError(source, "empty file")
    reader = csv.reader(lines, delimiter=delimiter, strict=True)
    header: list[str] | None = None
    header_line = 0
    rows = []
    for n in range(1, len(lines) + 1):
        try:
            fields = next(reader)
        except csv.Error as exc:
            if reader.line_num > n or "end of data" in str(exc):
                problem = 'unterminated quote (a field opened with " must close on the same line)'
            else:
                problem = f'malformed CSV ({exc}); quote a field holding commas as "...", doubling quotes inside'
            raise DataError(source, f"line {n}: {problem}") from exc
        except StopIteration:
            break
        if reader.line_num > n:
            raise DataError(source, f"line {n}: quoted field runs on to line {reader.line_num} (an unterminated quote?); "
                                    "keep each row on one line")  # fmt: skip
        if not any(f.strip() for f in fields):
            continue
        fields = [f.strip() for f in fields]
        if header is None:
            header, header_line = fields, n
            repeated = sorted({f for f in fields if fields.count(f) > 1})
            if repeated or "" in fields:
                raise DataError(source, f"line {n}: the header needs distinct, non-empty names, got {fields}")
        elif len(fields) != len(header):
            raise DataError(source, f"line {n}: {len(fields)} fields, but the header (line {header_line}) has {len(header)}: "
                                    f"{', '.join(header)}")  # fmt: skip
        else:
            rows.append((f"line {n}", dict(zip(header, fields, strict=True))))
    return header or [], rows


def _read_json_objects(source: Path) -> list[tuple[str, object]]:
    """(where, value) of each record: a JSON list in a .json file, or one value per non-blank line of JSONL."""
    if source.suffix.lower() == ".json":
        try:
            data = json.loads(source.read_bytes().decode("utf-8-sig"))
        except UnicodeDecodeError as exc:
            raise DataError(source, f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
        except json.JSONDecodeError as exc:
            raise DataError(source, f"line {exc.lineno}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
        if not isinstance(data, list):
            raise DataError(source, f"expected a JSON list of records, got a {type(data).__name__}")
        return [(f"record {i}", value) for i, value in enumerate(data, start=1)]
    records = []
    for n, line in enumerate(_lines(source), start=1):
        if line.strip():
            try:
                records.append((f"line {n}", json.loads(line)))
            except json.JSONDecodeError as exc:
                raise DataError(source, f"line {n}: not valid JSON ({exc.msg}, column {exc.colno})") from exc
    return records


def _read_parquet(source: Path) -> list[tuple[str, object]]:
    """(where, row dict) of each row of a Parquet file; pyarrow is imported only here."""
    try:
        import pyarrow.parquet as pq
    except ImportError as exc:
        raise ImportError(f"reading {source} (Parquet) needs pyarrow: pip install pyarrow") from exc
    try:
        rows = pq.read_table(source).to_pylist()
    except Exception as exc:  # pyarrow raises ArrowInvalid, OSError, ... on a damaged file
        raise DataError(source, f"not a readable Parquet file ({type(exc).__name__}: {exc})") from exc
    return [(f"row {i}", row) for i, row in enumerate(rows, start=1)]


def _as_text(value: object) -> str:
    """A JSON or Parquet value as a string: text as is, None as "", anything else as JSON."""
    if value is None:
        return ""
    return value.strip() if isinstance(value, str) else json.dumps(value, default=str)


def _objects_to_rows(
    source: Path, records: list[tuple[str, object]]
) -> tuple[list[str], list[tuple[str, dict[str, str]]]]:
    """Columns (in order of first appearance) and string rows of JSON-like records, which must be objects."""
    rows = []
    for where, record in records:
        if not isinstance(record, dict):
            raise DataError(source, f"{where}: expected an object of column: value, got {type(record).__name__}")
        rows.append((where, {str(k): _as_text(v) for k, v in record.items()}))
    return list(dict.fromkeys(k for _, row in rows for k in row)), rows


def _resolve(root: Path, value: str) -> Path:
    """An absolute, normalised path (symbolic links kept)."""
    return Path(os.path.abspath(root / value))


def _check_rows(
    source: Path,
    root: Path,
    columns: list[str],
    rows: list[tuple[str, dict[str, str]]],
    path_columns: tuple[str, ...],
    label_column: str | None,
) -> Records:
    """Validate rows (required columns, files, labels, duplicates) and resolve their paths into Records."""
    required = [*path_columns, *([label_column] if label_column else [])]
    missing = [c for c in required if c not in columns]
    if missing:
        raise DataError(source, f"missing column(s) {', '.join(map(repr, missing))}; the columns are "
                                f"{', '.join(columns) or '(none)'}")  # fmt: skip
    if not rows:
        raise DataError(source, "no rows")
    seen: dict[tuple[tuple[str, str], ...], str] = {}
    out = []
    for where, row in rows:
        for c in required:
            if c not in row:
                raise DataError(source, f"{where}: no {c!r}")
            if not row[c]:
                raise DataError(source, f"{where}: empty {c!r}")
        for c in path_columns:
            file = _resolve(root, row[c])
            if not file.is_file():
                problem = "not found" if not file.exists() else "is not a file"
                raise DataError(source, f"{where}: {c} {row[c]!r} {problem} (looked for {file})")
            row[c] = str(file)
        full = {c: row.get(c, "") for c in columns}
        key = tuple(full.items())
        if key in seen:
            raise DataError(source, f"{where} repeats {seen[key]} (the same file and the same value in every column)")
        seen[key] = where
        out.append(full)
    return Records(source, root, out, path_columns, label_column, [where for where, _ in rows])


def _visible(folder: Path) -> list[Path]:
    """Entries of a folder, hidden ones (.DS_Store, .ipynb_checkpoints) left out, sorted by name."""
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _wanted(path: Path, kind: str | None) -> bool:
    """Whether a file belongs to the data: any visible file, or one with an extension of ``kind``."""
    if kind is None:
        return True
    return path.suffix.lower() in (IMAGE_EXTENSIONS if kind == "image" else AUDIO_EXTENSIONS)


def _read_class_folders(folder: Path, file_column: str, label_column: str | None, kind: str | None) -> Records:
    """torchvision ImageFolder's layout: ``folder/<class>/**/<file>``, classes sorted by name."""
    entries = _visible(folder)
    if not entries:
        raise DataError(folder, f"empty folder; expected {' or '.join(METADATA_FILES)}, or one subfolder per class")
    classes = [p for p in entries if p.is_dir()]
    loose = [p.name for p in entries if p.is_file() and _wanted(p, kind)]
    if not classes:
        if label_column is not None:
            raise DataError(folder, f"no metadata file ({', '.join(METADATA_FILES)}) and no class subfolders; "
                                    "pass label_column=None to read the files unlabelled")  # fmt: skip
        rows = [{file_column: str(folder / name)} for name in loose]
        if not rows:
            raise DataError(folder, f"no {kind} files")
        return Records(folder, folder, rows, (file_column,), None)
    if loose:
        shown = ", ".join(loose[:5]) + (f" and {len(loose) - 5} more" if len(loose) > 5 else "")
        raise DataError(folder, f"files at the top level next to class subfolders: {shown}; move them into a class "
                                f"folder, or add {METADATA_FILES[0]} with a file_name column")  # fmt: skip
    label = label_column or "label"
    rows = []
    for class_dir in classes:
        files = sorted(
            p
            for p in class_dir.rglob("*")
            if p.is_file()
            and _wanted(p, kind)
            and not any(part.startswith(".") for part in p.relative_to(folder).parts)
        )
        if not files:
            raise DataError(class_dir, f"class folder holds no {kind + ' ' if kind else ''}files")
        rows += [{file_column: str(p), label: class_dir.name} for p in files]
    return Records(folder, folder, rows, (file_column,), label)


def _conversation(source: Path, root: Path, where: str, record: object) -> Conversation:
    """Check one LLaVA record and turn it into a Conversation; DataError naming ``where`` otherwise."""
    if not isinstance(record, dict):
        raise DataError(source, f"{where}: expected an object with 'image' and 'conversations'")
    image = record.get("image")
    if not isinstance(image, str) or not image.strip():
        raise DataError(source, f"{where}: no 'image' (a path string; records without an image are not supported)")
    file = _resolve(root, image.strip())
    if not file.is_file():
        raise DataError(source, f"{where}: image {image!r} not found (looked for {file})")
    turns = record.get("conversations")
    if not isinstance(turns, list) or not turns:
        raise DataError(source, f"{where}: 'conversations' must be a non-empty list of turns")
    if len(turns) % 2:
        raise DataError(source, f"{where}: {len(turns)} turns; expected question/answer pairs (an even number)")
    texts = []
    for i, turn in enumerate(turns):
        roles = _QUESTION_ROLES if i % 2 == 0 else _ANSWER_ROLES
        who = turn.get("from") if isinstance(turn, dict) else None
        value = turn.get("value") if isinstance(turn, dict) else None
        if who not in roles:
            raise DataError(source, f"{where}: turn {i + 1} is from {who!r}, expected {' or '.join(roles)}")
        text = value.replace("<image>", "").strip() if isinstance(value, str) else ""
        if not text:
            raise DataError(source, f"{where}: turn {i + 1} has an empty 'value'")
        texts.append(text)
    pairs = list(zip(texts[::2], texts[1::2], strict=True))
    meta = {k: str(v) for k, v in record.items()
            if k not in ("id", "image", "conversations") and isinstance(v, (str, int, float, bool))}  # fmt: skip
    return Conversation(str(record.get("id", "")), file, pairs, meta)
