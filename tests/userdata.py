"""Small user-style data folders for the own-data tests, written with cv2, soundfile and csv only (never through
the cookbook's own loaders): the layouts a user has, with the mess users have (grey and colour images of
different sizes, clips of different lengths, any sample rate)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

LETTERS = "ABCDEFGHJKLMNPRS"


def class_names(n_classes: int) -> list[str]:
    """Class names that do not sort like their ids would ("cls10" before "cls2"), to catch id mix-ups."""
    return [f"cls{k}" for k in range(n_classes)]


def tone(k: int, n_classes: int, sr: int, speaker: int, rng: np.random.Generator) -> np.ndarray:
    """Class k: two partials whose frequencies depend on k; speakers shift the pitch; random length, noise."""
    seconds = rng.uniform(0.45, 0.8)
    t = np.arange(int(seconds * sr)) / sr
    f = 300.0 * 2 ** (2.5 * k / n_classes) * (1 + 0.04 * (speaker - 1))
    wave = np.sin(2 * np.pi * f * t) + 0.5 * np.sin(2 * np.pi * (f * (1.5 + 0.5 * (k % 2))) * t)
    wave *= np.hanning(len(t)) * rng.uniform(0.2, 0.8)
    return (wave + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def glyph(k: int, rng: np.random.Generator) -> np.ndarray:
    """Class k: its letter drawn at a random place and scale on a canvas of random size; grey, colour or RGBA."""
    h, w = int(rng.integers(28, 64)), int(rng.integers(28, 64))
    img = np.full((h, w), int(rng.integers(0, 40)), np.uint8)
    scale = min(h, w) / 30 * rng.uniform(0.8, 1.0)
    x, y = int(rng.integers(0, max(1, w // 5))), int(h * rng.uniform(0.75, 0.9))
    cv2.putText(img, LETTERS[k], (x, y), cv2.FONT_HERSHEY_SIMPLEX, scale, 255, max(1, int(2 * scale)))
    kind = int(rng.integers(3))
    if kind == 0:
        return img
    colour = cv2.cvtColor(img, cv2.COLOR_GRAY2BGR)
    return colour if kind == 1 else cv2.cvtColor(colour, cv2.COLOR_BGR2BGRA)


def write_av_folder(root: Path, n_classes: int, sr: int, clips_per_class_speaker: int = 8, n_speakers: int = 3,
                    images_per_class: int = 16, metadata: bool = True, seed: int = 0) -> Path:  # fmt: skip
    """``root/audio`` (an audiofolder with metadata.csv: file_name,label,speaker; or class subfolders) and
    ``root/images`` (class subfolders, as torchvision's ImageFolder)."""
    rng = np.random.default_rng(seed)
    names = class_names(n_classes)
    rows = []
    for k, name in enumerate(names):
        for s in range(n_speakers):
            for j in range(clips_per_class_speaker):
                rel = Path(f"{name}_{s}_{j}.wav") if metadata else Path(name) / f"spk{s}_{j}.wav"
                (root / "audio" / rel).parent.mkdir(parents=True, exist_ok=True)
                sf.write(root / "audio" / rel, tone(k, n_classes, sr, s, rng), sr)
                rows.append({"file_name": rel.as_posix(), "label": name, "speaker": f"voice{s}"})
        (root / "images" / name).mkdir(parents=True, exist_ok=True)
        for j in range(images_per_class):
            cv2.imwrite(str(root / "images" / name / f"{j}.png"), glyph(k, rng))
    if metadata:
        with open(root / "audio" / "metadata.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ["file_name", "label", "speaker"])
            writer.writeheader()
            writer.writerows(rows)
    return root


SHAPES = ("circle", "square", "triangle", "cross")
COLOURS = {"red": (0, 0, 255), "green": (0, 200, 0), "blue": (255, 0, 0), "yellow": (0, 230, 230),
           "white": (255, 255, 255), "purple": (200, 0, 160)}  # BGR  # fmt: skip
PLACES = ("left", "middle", "right")


def shape_image(shape: str, colour: str, place: str, rng: np.random.Generator) -> np.ndarray:
    """A coloured shape at a place on a dark canvas of random size (BGR, for cv2.imwrite)."""
    h, w = int(rng.integers(90, 160)), int(rng.integers(140, 240))
    img = np.full((h, w, 3), int(rng.integers(0, 50)), np.uint8)
    cx = {"left": w // 5, "middle": w // 2, "right": 4 * w // 5}[place] + int(rng.integers(-5, 6))
    cy, r, c = h // 2 + int(rng.integers(-8, 9)), int(min(h, w) * rng.uniform(0.22, 0.3)), COLOURS[colour]
    if shape == "circle":
        cv2.circle(img, (cx, cy), r, c, -1)
    elif shape == "square":
        cv2.rectangle(img, (cx - r, cy - r), (cx + r, cy + r), c, -1)
    elif shape == "triangle":
        pts = np.array([[cx, cy - r], [cx - r, cy + r], [cx + r, cy + r]], np.int32)
        cv2.fillPoly(img, [pts], c)
    else:
        cv2.line(img, (cx - r, cy - r), (cx + r, cy + r), c, max(3, r // 3))
        cv2.line(img, (cx - r, cy + r), (cx + r, cy - r), c, max(3, r // 3))
    return img


def write_caption_folder(root: Path, layout: str = "metadata", labels: bool = True, seed: int = 0) -> Path:
    """72 photos of coloured shapes (every shape x colour x place once), 1 to 5 captions each.

    ``layout="metadata"``: an imagefolder (metadata.csv: file_name,caption[,label], one row per caption);
    ``layout="captions"``: Flickr-style ``captions.csv`` (filename,caption) with the photos under ``images/``.
    The label, when written, is the shape.
    """
    rng = np.random.default_rng(seed)
    rows = []
    for shape in SHAPES:
        for colour in COLOURS:
            for place in PLACES:
                name = f"{colour}_{shape}_{place}.{'jpg' if rng.random() < 0.5 else 'png'}"
                rel = name if layout == "metadata" else f"images/{name}"
                (root / rel).parent.mkdir(parents=True, exist_ok=True)
                cv2.imwrite(str(root / rel), shape_image(shape, colour, place, rng))
                phrasings = [f"a {colour} {shape} on the {place}", f"{colour} {shape}, {place} side",
                             f"a picture of a {colour} {shape} in the {place}", f"the {shape} is {colour}",
                             f"one {colour} {shape} at the {place} of a dark picture"]  # fmt: skip
                for caption in phrasings[: int(rng.integers(1, 6))]:
                    rows.append({"file_name" if layout == "metadata" else "filename": rel, "caption": caption,
                                 **({"label": shape} if labels and layout == "metadata" else {})})  # fmt: skip
    table = root / ("metadata.csv" if layout == "metadata" else "captions.csv")
    with open(table, "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_llava_folder(root: Path, repeats: int = 3, seed: int = 0) -> Path:
    """A mini-VLM data folder in LLaVA's format: ``images/`` (every shape x colour x place ``repeats`` times, PNG
    or JPEG of random sizes), ``captions.json`` (a JSON list, one record per caption, 1-3 per image) and
    ``vqa.jsonl`` (per image: a colour and a shape question, and a two-turn record about the place; each
    record has a ``type``)."""
    rng = np.random.default_rng(seed)
    captions, vqa = [], []
    (root / "images").mkdir(parents=True, exist_ok=True)
    for r in range(repeats):
        for shape in SHAPES:
            for colour in COLOURS:
                for place in PLACES:
                    rel = f"images/{colour}_{shape}_{place}_{r}.{'jpg' if rng.random() < 0.5 else 'png'}"
                    cv2.imwrite(str(root / rel), shape_image(shape, colour, place, rng))
                    phrasings = [f"a {colour} {shape} on the {place}", f"the {shape} is {colour}",
                                 f"one {colour} {shape} at the {place} of a dark picture"]  # fmt: skip
                    for k, caption in enumerate(phrasings[: int(rng.integers(1, 4))]):
                        captions.append({"id": f"{rel}#{k}", "image": rel, "conversations": [
                            {"from": "human", "value": "<image>\nDescribe the image briefly."},
                            {"from": "gpt", "value": caption}]})  # fmt: skip
                    turns = {"colour": [("What colour is the shape?", colour)],
                             "shape": [("What shape is in the picture?", shape)],
                             "place": [("Where is the shape?", f"on the {place}"),
                                       ("Which side of the picture is it on?", place)]}  # fmt: skip
                    for qtype, pairs in turns.items():
                        conv = [
                            {"from": "human", "value": "<image>\n" + pairs[0][0]},
                            {"from": "gpt", "value": pairs[0][1]},
                        ]
                        for q, a in pairs[1:]:
                            conv += [{"from": "human", "value": q}, {"from": "gpt", "value": a}]
                        vqa.append({"id": f"{rel}#{qtype}", "image": rel, "type": qtype, "conversations": conv})
    (root / "captions.json").write_text(json.dumps(captions, indent=1))
    (root / "vqa.jsonl").write_text("".join(json.dumps(v) + "\n" for v in vqa))
    return root


CATEGORIES = {"A": "backpack", "B": "bicycle", "C": "camera", "D": "desk lamp", "E": "espresso machine",
              "F": "football", "G": "guitar", "H": "headphones"}  # fmt: skip
VAGUE = ["great value item", "best seller, buy now", "new arrival", "limited offer", "gift idea for everyone"]


def write_products(root: Path, n_per_class: int = 20, vague: float = 0.3, seed: int = 0) -> Path:
    """``products.csv`` (path,title,label) and ``img/*.png``: the image shows the class letter, the title names the
    product except for a ``vague`` fraction of generic titles."""
    rng = np.random.default_rng(seed)
    (root / "img").mkdir(parents=True, exist_ok=True)
    rows = []
    for letter, product in CATEGORIES.items():
        for j in range(n_per_class):
            rel = f"img/{letter}{j}.png"
            cv2.imwrite(str(root / rel), glyph(LETTERS.index(letter), rng))
            title = (
                VAGUE[j % len(VAGUE)] if rng.random() < vague else f"{rng.choice(['new', 'used', 'compact'])} {product}"
            )
            rows.append({"path": rel, "title": title, "label": product})
    with open(root / "products.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, ["path", "title", "label"])
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_commands(root: Path, words: tuple[str, ...] = ("yes", "no", "up", "down", "left", "right"),
                   voices: int = 4, per_voice: int = 10, sr: int = 16000, seed: int = 0) -> Path:  # fmt: skip
    """``root/<word>/<voice>_<n>.wav`` at ``sr``: a folder per word, the voice in the file name."""
    rng = np.random.default_rng(seed)
    for k, word in enumerate(words):
        (root / word).mkdir(parents=True, exist_ok=True)
        for v in range(voices):
            for j in range(per_voice):
                sf.write(root / word / f"voice{v}_{j}.wav", tone(k, len(words), sr, [0, 1, 2, 1][v % 4], rng), sr)
    return root


def write_post_folder(root: Path, texts: bool = True, seed: int = 0) -> Path:
    """A moderation folder: every shape x colour x place photo twice, once with a caption that describes it
    (``allowed``) and once with another photo's caption (``flagged``), the caption written on the picture in
    white with a black outline (cv2.putText); ``metadata.csv`` has file_name, label, group (the photo) and, if
    ``texts``, the text."""
    rng = np.random.default_rng(seed)
    photos = [(s, c, p) for s in SHAPES for c in COLOURS for p in PLACES]
    partner = rng.permutation(len(photos))
    while (partner == np.arange(len(photos))).any():
        partner = rng.permutation(len(photos))
    rows = []
    for k, (shape, colour, place) in enumerate(photos):
        other = photos[int(partner[k])]
        for label, (s, c, p) in (("allowed", (shape, colour, place)), ("flagged", other)):
            text = f"a {c} {s} on the {p}"
            img = cv2.resize(shape_image(shape, colour, place, rng), (320, 240))
            for ink, width in (((0, 0, 0), 4), ((255, 255, 255), 1)):
                cv2.putText(img, text, (8, 225), cv2.FONT_HERSHEY_SIMPLEX, 0.6, ink, width, cv2.LINE_AA)
            rel = f"posts/{k:03d}_{label}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            cv2.imwrite(str(root / rel), img)
            rows.append({"file_name": rel, "label": label, "group": f"photo{k}", **({"text": text} if texts else {})})
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


CALL_REQUESTS = {
    "billing": ("my bill is wrong", "why did you charge me twice", "I want to pay what I owe", "how much is my bill"),
    "technical": ("my internet is down", "the router keeps restarting", "I have no signal", "the wifi is slow"),
    "sales": ("I want a new phone", "do you have cheaper plans", "I'd like to add a line", "sell me a tablet"),
    "moving": ("I am moving house", "change my address please", "I moved to a new flat", "update where I live"),
    "other": ("what time do you close", "are you open on Sunday", "who am I speaking to", "where is your shop"),
}


def write_call_folder(root: Path, speakers: tuple[str, ...] = ("en-us+m1", "en-gb+f2", "en-us+m4", "en-gb-scotland+f1",
                      "en-us+f5"), seed: int = 0) -> Path:  # fmt: skip
    """Recorded calls as a user has them: ``calls/<speaker>/<n>.wav`` spoken by espeak-ng (its command line, not the
    cookbook's synthesiser) at 22.05 kHz, some saved at 44.1 kHz stereo; ``metadata.csv`` with file_name, intent,
    transcript and speaker. Five intents of the user's own, four requests each, every speaker saying all of them."""
    import subprocess

    rng = np.random.default_rng(seed)
    rows = []
    for s, voice in enumerate(speakers):
        folder = root / "calls" / f"speaker{s}"
        folder.mkdir(parents=True, exist_ok=True)
        for intent, texts in CALL_REQUESTS.items():
            for j, text in enumerate(texts):
                rel = f"calls/speaker{s}/{intent}_{j}.wav"
                subprocess.run(["espeak-ng", "-v", voice, "-s", str(int(rng.integers(140, 190))), "-w", str(root / rel),
                                text], check=True)  # fmt: skip
                if rng.random() < 0.3:  # re-saved by another app: 44.1 kHz stereo
                    wave, sr = sf.read(root / rel)
                    up = np.interp(np.arange(0, len(wave), sr / 44100), np.arange(len(wave)), wave)
                    sf.write(root / rel, np.stack([up, up], 1), 44100)
                rows.append({"file_name": rel, "intent": intent, "transcript": text, "speaker": f"speaker{s}"})
    with open(root / "metadata.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root
