"""The assistant's data: one conversation per example, about one image, in LLaVA's format.

    data = load_instructions(data="real")        # Flickr8k captions + Sort-of-CLEVR questions + digit questions
    data.stage1("train")                          # the captions alone (alignment, stage 1)
    data.stage2("train")                          # the whole mixture (instruction tuning, stage 2)
    write_llava(data, "train", "my_mix/")         # the same examples as LLaVA JSONL + image files

Three tasks, as LLaVA mixes them, each split by image (no test image is ever trained on):

- ``caption``: "Describe the image briefly." -> one reference caption. ``real``: the Flickr8k 1,000-image subset
  with the mini VLM's own 800/100/100 split, so the two scenarios are scored on the same 100 held-out photos;
  ``embedded``: generated Sort-of-CLEVR scenes with template captions.
- ``scene_qa``: the six Sort-of-CLEVR question types about generated scenes, in plain words, ending with
  "Answer with one word." (the answer format stage 2 must learn).
- ``digits``: "Which digit is written in the image? Answer with one digit." on MNIST's test set (``real``;
  10,000 digits) or scikit-learn's 1,797 digits (``embedded``).

Your own data: a folder with ``captions.jsonl`` (stage 1 and the caption task) and optionally ``vqa.jsonl``
(more instruction data for stage 2), the layout the mini VLM reads (see :mod:`~mmhelpers.data.llava_folder`),
so the same folder trains both.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmhelpers.atomic import atomic_open
from mmhelpers.data.folders import read_llava
from mmhelpers.data.llava_folder import LLAVA_FILES, is_own_data, llava_file, split_by_image

__all__ = [
    "CAPTION_PROMPT",
    "SCENE_QUESTIONS",
    "DIGIT_QUESTION",
    "Sample",
    "InstructionData",
    "load_instructions",
    "answer_in_format",
    "write_llava",
]

SPLITS = ("train", "val", "test")
CAPTION_PROMPT = "Describe the image briefly."  # the evaluation prompt; training varies it (LLaVA's stage 1 does)
CAPTION_PROMPTS = (
    CAPTION_PROMPT,
    "Write a short caption for this image.",
    "What is happening in this picture? Answer in one sentence.",
    "Give a brief description of the photo.",
)
ONE_WORD = "Answer with one word."
SCENE_QUESTIONS = {  # Sort-of-CLEVR's six question types, in plain words (the mini VLM's templates are word lists)
    "shape": "What shape is the {c} object?",
    "horizontal": "Is the {c} object on the left or on the right?",
    "vertical": "Is the {c} object at the top or at the bottom?",
    "closest_color": "What colour is the object closest to the {c} object?",
    "furthest_shape": "What shape is the object furthest from the {c} object?",
    "count": "How many objects have the same shape as the {c} object?",
}
DIGIT_QUESTION = "Which digit is written in the image? Answer with one digit."


@dataclass
class Sample:
    """One conversation about ``images[image]``: (question, answer) turns, its task and what it is scored by."""

    image: int
    turns: list[tuple[str, str]]
    task: str  # "caption" | "scene_qa" | "digits" | "vqa" (own data)
    meta: dict[str, str] = field(default_factory=dict)  # e.g. {"qtype": "count", "answer": "3"}


@dataclass
class InstructionData:
    """Images (paths or RGB arrays), the examples of every split, and each caption image's references."""

    images: list[Path | np.ndarray]
    image_ids: list[str]
    samples: dict[str, list[Sample]]  # split -> examples of every task
    references: dict[int, list[str]]  # image -> its reference captions (caption images only)
    source: str
    # image -> a description naming every object and where it is ("a blue circle at the top left, ... and a green
    # square at the bottom right"): the generated scenes', every split; what AssistantConfig.region_phrases learns from
    descriptions: dict[int, str] = field(default_factory=dict)
    # captions as text alone, no image: a caption corpus for stage 2's corpus steps (AssistantConfig.corpus_steps).
    # real: the 39,455 Flickr8k captions of every photo but the validation and test ones (the mini VLM pre-trains
    # its decoder on them); embedded and your own folder: none (set it to your own captions' text before
    # ``prepare(cfg, data=data)`` and stage 2 trains on them too)
    corpus: list[str] = field(default_factory=list)

    def stage1(self, split: str) -> list[Sample]:
        """The caption examples of ``split``: stage 1 trains the projector on them alone."""
        return [s for s in self.samples[split] if s.task == "caption"]

    def stage2(self, split: str) -> list[Sample]:
        """Every example of ``split``: the instruction mixture of stage 2."""
        return list(self.samples[split])

    def caption_images(self, split: str) -> list[int]:
        """The distinct images of ``split``'s caption examples, in order (one caption each at evaluation)."""
        return list(dict.fromkeys(s.image for s in self.stage1(split)))

    def tasks(self, split: str) -> dict[str, int]:
        """How many examples of each task ``split`` holds."""
        out: dict[str, int] = {}
        for s in self.samples[split]:
            out[s.task] = out.get(s.task, 0) + 1
        return out


def _caption_set(data: str, sizes: tuple[int, int, int], seed: int):
    """Caption images, ids, captions, split and source: the Flickr8k subset split as the mini VLM splits it
    (``CaptionedImages.split`` with the same sizes and seed), or generated scenes with 5 template captions each."""
    if data == "real":
        from mmhelpers.data.flickr8k import load_flickr8k

        ds = load_flickr8k(progress=False)
        splits = dict(zip(SPLITS, ds.split(sizes, seed=seed), strict=True))
        return list(ds.image_paths), [p.name for p in ds.image_paths], ds.captions, splits, ds.source
    from mmhelpers.data.sort_of_clevr import make_scenes, render_scene, scene_captions

    n = sum(sizes)
    scenes = make_scenes(n, seed)
    perm = np.random.default_rng(seed).permutation(n)
    bounds = np.cumsum((0, *sizes))
    splits = {name: np.sort(perm[a:b]) for name, a, b in zip(SPLITS, bounds[:-1], bounds[1:], strict=True)}
    return ([render_scene(s) for s in scenes], [f"scene{i:05d}" for i in range(n)],
            [scene_captions(s, n=5, seed=seed) for s in scenes], splits,
            f"embedded: {n} generated Sort-of-CLEVR scenes (64 px), 5 template captions each")  # fmt: skip


def _add_captions(data: InstructionData, captions: Sequence[Sequence[str]], splits: dict[str, np.ndarray],
                  offset: int, seed: int) -> None:  # fmt: skip
    rng = np.random.default_rng([seed, 1])
    for split, rows in splits.items():
        for i in rows.tolist():
            data.references[offset + i] = list(captions[i])
            for cap in captions[i] if split == "train" else captions[i][:1]:  # held out: one example per image
                prompt = (
                    CAPTION_PROMPTS[int(rng.integers(len(CAPTION_PROMPTS)))] if split == "train" else CAPTION_PROMPT
                )
                data.samples[split].append(Sample(offset + i, [(prompt, cap)], "caption"))


def _scene_question(qtype: str, color: str) -> str:
    return f"{SCENE_QUESTIONS[qtype].format(c=color)} {ONE_WORD}"


def _add_scenes(data: InstructionData, n_scenes: tuple[int, int, int], per_scene: int, seed: int, turns: int = 1,
                describe: bool = False) -> None:  # fmt: skip
    """Generated scenes: ``per_scene`` random questions of each training scene, asked ``turns`` to a conversation
    (LLaVA's multi-turn examples: the image is read once for all of them), and all 36 of each val/test scene,
    one conversation each (as they are scored). ``describe``: each training scene also gets a caption that names
    every object, its colour, shape and quarter of the image (stage 1 aligns the projector on it with the photos')."""
    if turns < 1 or per_scene % turns:
        raise ValueError(f"scene_turns={turns} must be at least 1 and divide questions_per_scene={per_scene}")
    from mmhelpers.data.sort_of_clevr import describe_scene, make_scenes, questions_for, render_scene

    scenes = make_scenes(sum(n_scenes), seed=seed + 1000)  # never the caption scenes (seed) of the embedded set
    rng = np.random.default_rng([seed, 2])
    bounds = np.cumsum((0, *n_scenes))
    for split, a, b in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        for scene in scenes[a:b]:
            image = len(data.images)
            data.images.append(render_scene(scene))
            data.image_ids.append(f"clevr{seed + 1000}-{len(data.image_ids):05d}")
            data.descriptions[image] = describe_scene(scene)
            qs = questions_for(scene)
            if split != "train":
                for q in qs:
                    data.samples[split].append(Sample(image, [(_scene_question(q.qtype, q.color), q.answer)],
                                                      "scene_qa", {"qtype": q.qtype, "answer": q.answer}))  # fmt: skip
                continue
            if describe:
                data.samples[split].append(Sample(image, [(CAPTION_PROMPT, describe_scene(scene))], "caption"))
            pick = [qs[int(k)] for k in rng.choice(len(qs), size=per_scene, replace=False)]
            for a in range(0, per_scene, turns):
                group = pick[a : a + turns]
                meta = {"qtype": group[0].qtype, "answer": group[0].answer} if turns == 1 else {
                    "qtypes": ",".join(q.qtype for q in group)}  # fmt: skip
                data.samples[split].append(Sample(image, [(_scene_question(q.qtype, q.color), q.answer) for q in group],
                                                  "scene_qa", meta))  # fmt: skip


def _add_digits(data: InstructionData, real: bool, n: tuple[int, int, int], seed: int) -> None:
    """Digit images (MNIST's test set with the mirror, else scikit-learn's), grey made RGB, split by image."""
    from mmhelpers.data.embedded import load_digit_images

    if real:
        from mmhelpers.data.mnist import load_mnist

        digits = load_mnist("test")
    else:
        digits = load_digit_images()
    if sum(n) > len(digits):
        raise ValueError(f"{sum(n)} digit images asked for, {digits.source} has {len(digits)}")
    perm = np.random.default_rng([seed, 3]).permutation(len(digits))
    bounds = np.cumsum((0, *n))
    for split, a, b in zip(SPLITS, bounds[:-1], bounds[1:], strict=True):
        for i in perm[a:b].tolist():
            image = len(data.images)
            data.images.append(np.repeat(digits.images[i][..., None], 3, axis=2))
            data.image_ids.append(f"digit-{i:05d}")
            label = digits.classes[int(digits.labels[i])]
            data.samples[split].append(Sample(image, [(DIGIT_QUESTION, label)], "digits", {"answer": label}))


def _load_own(folder: str | Path, seed: int) -> InstructionData:
    """``captions.jsonl`` (+ optional ``vqa.jsonl``) of a user's folder, split by image over both files."""
    cap_file = llava_file(folder, "captions")
    records = [(r, "caption") for r in read_llava(cap_file)]
    root = Path(os.path.abspath(folder))
    vqa = [root / name for name in LLAVA_FILES["vqa"] if root.is_dir() and (root / name).is_file()]
    for path in vqa[:1]:
        records += [(r, "vqa") for r in read_llava(path)]
    paths = list(dict.fromkeys(r.image for r, _ in records))
    index = {p: i for i, p in enumerate(paths)}
    split_of = {int(i): s for s, rows in split_by_image(paths, seed=seed).items() for i in rows}
    ids = [str(p.relative_to(cap_file.parent)) if p.is_relative_to(cap_file.parent) else str(p) for p in paths]
    data = InstructionData(list(paths), ids, {s: [] for s in SPLITS}, {}, "")
    for record, task in records:
        i = index[record.image]
        split = split_of[i]
        if task == "caption":
            caps = [a for _, a in record.turns]
            data.references.setdefault(i, []).extend(caps)
            data.samples[split].extend(Sample(i, [(CAPTION_PROMPT, c)], "caption") for c in caps)
        else:
            meta = dict(record.meta)
            if len(record.turns) == 1:
                meta["answer"] = record.turns[0][1]
            data.samples[split].append(Sample(i, list(record.turns), "vqa", meta))
    for split in ("val", "test"):  # held-out caption images: one example each (all references kept for scoring)
        seen: set[int] = set()
        data.samples[split] = [s for s in data.samples[split]
                               if s.task != "caption" or not (s.image in seen or seen.add(s.image))]  # fmt: skip
    counts = {s: len(data.samples[s]) for s in SPLITS}
    data.source = (
        f"own data: {cap_file}"
        + (f" + {vqa[0].name}" if vqa else "")
        + f" ({len(paths)} images; examples train/val/test {counts['train']}/{counts['val']}/{counts['test']})"
    )
    return data


def load_instructions(data: str | Path = "real", seed: int = 0, caption_split: tuple[int, int, int] = (800, 100, 100),
                      scenes: tuple[int, int, int] = (800, 50, 50), questions_per_scene: int = 6,
                      digits: tuple[int, int, int] = (800, 50, 50), scene_turns: int = 1,
                      describe_scenes: bool = False) -> InstructionData:  # fmt: skip
    """The instruction mixture of ``data`` ("real" needs the mirror's Flickr8k and MNIST; "embedded" needs nothing;
    a path is your own folder, see the module docstring). Deterministic for ``seed``.

    ``caption_split``: caption images (real: of the Flickr8k subset; embedded: scenes) for train/val/test;
    ``scenes``: Sort-of-CLEVR scenes for the question task, ``questions_per_scene`` of each training scene
    (all 36 of each held-out one), ``scene_turns`` of them to a training conversation, and with ``describe_scenes``
    a caption of each training scene that names every object and where it is; ``digits``: digit images.
    A zero count leaves a task out. "real" also fills ``corpus``: the Flickr8k captions of every photo outside the
    validation and test splits.
    """
    if is_own_data(data):
        return _load_own(data, seed)
    images, ids, captions, splits, source = _caption_set(str(data), caption_split, seed)
    out = InstructionData(images, ids, {s: [] for s in SPLITS}, {}, "")
    _add_captions(out, captions, splits, 0, seed)
    if data == "real":
        from mmhelpers.data.flickr8k import load_flickr8k_all_captions

        held = {ids[i] for split in ("val", "test") for i in splits[split].tolist()}
        out.corpus = [c for caps in load_flickr8k_all_captions(exclude_images=held).values() for c in caps]
    if sum(scenes):
        _add_scenes(out, scenes, questions_per_scene, seed, scene_turns, describe_scenes)
    if sum(digits):
        _add_digits(out, data == "real", digits, seed)
    counts = {s: out.tasks(s) for s in SPLITS}
    out.source = (
        f"{source}; Sort-of-CLEVR scenes; "
        + ("MNIST test digits" if data == "real" else "scikit-learn digits")
        + f"; examples by split and task: {counts}"
    )
    return out


def answer_in_format(sample: Sample, reply: str) -> bool:
    """Whether ``reply`` has the format ``sample``'s question asks for: one word of the answer set (scene
    questions), one digit (digits); any non-empty text for captions and your own questions."""
    words = reply.strip().rstrip(".!").split()
    if sample.task == "scene_qa":
        from mmhelpers.data.sort_of_clevr import ANSWER_WORDS

        return len(words) == 1 and words[0].lower() in ANSWER_WORDS
    if sample.task == "digits":
        return len(words) == 1 and len(words[0]) == 1 and words[0].isdigit()
    return bool(words)


def write_llava(data: InstructionData, split: str, folder: str | Path, name: str = "instructions.jsonl") -> Path:
    """``split``'s examples as LLaVA JSONL in ``folder`` (images that are arrays saved as PNG under ``images/``);
    returns the JSONL's path. ``read_llava`` (and this scenario's own-data path) reads it back."""
    import cv2

    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, s in enumerate(data.samples[split]):
        image = data.images[s.image]
        if isinstance(image, np.ndarray):
            rel = f"images/{data.image_ids[s.image]}.png"
            if not (folder / rel).is_file():
                ok, png = cv2.imencode(".png", np.ascontiguousarray(image[..., ::-1]))  # OpenCV writes BGR
                with atomic_open(folder / rel, "wb") as f:
                    f.write(png.tobytes())
        else:
            rel = os.path.relpath(image, folder)
        conv = []
        for t, (q, a) in enumerate(s.turns):
            conv += [{"from": "human", "value": ("<image>\n" if t == 0 else "") + q}, {"from": "gpt", "value": a}]
        lines.append(json.dumps({"id": f"{split}-{k:06d}", "image": rel, "task": s.task, **s.meta,
                                 "conversations": conv}, ensure_ascii=False))  # fmt: skip
    path = folder / name
    with atomic_open(path, "w") as f:
        f.write("\n".join(lines) + "\n")
    return path
