"""Visual question answering on your own data, LLaVA-style: frozen grid features -> MiniVLM, the answer generated.

The Sort-of-CLEVR recipe (:mod:`~mmhelpers.scenarios.mini_vlm.vqa`) is built for its scenes (colour slots, 36
fixed questions). This one takes any images and any questions, as LLaVA does: a ``vqa.jsonl`` of
records with question/answer turns (see :mod:`~mmhelpers.data.llava_folder`).

1. :func:`load_answer_data`: every (question, answer) turn becomes an example of its record's image; images are
   split 80/10/10 (an image's questions all go to one split); a record's ``type`` field, if any, names the
   question type the answers are scored by.
2. :func:`build_answer_tokenizer`: a word-level tokenizer of the training questions and answers.
3. :func:`~mmhelpers.scenarios.mini_vlm.captioning.grid_features`: frozen EfficientNet-Lite0 grid cells, one
   visual token each, cached.
4. :func:`encode_examples`: each example as one sequence, the prompt ``<pad>... <bos> question`` (left-padded
   to ``question_len``, so every answer starts at the same position) then ``answer <eos>``; the targets are
   the answer's tokens and ``<eos>`` only (the question is never a target, as in LLaVA's instruction tuning).
5. :func:`build_answer_model` (prefix fusion: the visual tokens, then the prompt) trained through the engine
   with :func:`answer_batches` and :func:`answer_loss` (:func:`train_answers` does steps 4-5 in one call).
6. :func:`answer_questions` (greedy, up to ``answer_len`` tokens) and :func:`answer_accuracy` (exact match of
   the normalised words, per question type), against :func:`prior_answers`, the question-only baseline: the
   most frequent training answer of the same question.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from mmhelpers.caption_tokenizer import CaptionTokenizer, caption_words, train_caption_tokenizer
from mmhelpers.data.folders import read_llava
from mmhelpers.data.llava_folder import llava_file, split_by_image
from mmhelpers.engine import FitConfig, History, epoch_batch, fit, warmup_cosine
from mmhelpers.errors import DataError
from mmhelpers.features import fingerprint
from mmhelpers.generate import generate
from mmhelpers.scenarios.mini_vlm.captioning import caption_loss
from mmhelpers.vlm import MiniVLM, VLMConfig

__all__ = [
    "AnswerConfig",
    "AnswerData",
    "load_answer_data",
    "build_answer_tokenizer",
    "encode_prompts",
    "encode_examples",
    "build_answer_model",
    "answer_batches",
    "answer_loss",
    "answer_fingerprint",
    "train_answers",
    "answer_questions",
    "answer_accuracy",
    "prior_answers",
]

_RUN_ONLY = ("checkpoint_every", "device")  # may differ between a run and its resume


@dataclass
class AnswerConfig:
    """Data, sizes and schedule of the own-data VQA recipe; ``smoke()`` is a short run for tests."""

    data: str  # a folder with vqa.jsonl (or .json), or the path of such a file
    seed: int = 0
    type_field: str = "type"  # a record's field naming its question type (records without it: "all")
    image_size: int = 224  # encoder input; (image_size // 32)^2 visual tokens
    vocab_size: int = 2000
    min_frequency: int = 1
    question_len: int = 24  # prompt positions: <bos> and the question's words (a longer question keeps its last)
    answer_len: int = 8  # the answer's words and <eos> (a longer answer is cut)
    n_layer: int = 2
    n_head: int = 4
    n_embd: int = 128
    dropout: float = 0.1
    projector: str = "mlp"  # one token per grid cell ("linear" | "mlp")
    steps: int = 800
    batch_size: int = 64
    lr: float = 2e-3
    weight_decay: float = 0.05
    warmup_steps: int = 40
    checkpoint_every: int = 200
    device: str = "auto"
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.data = str(self.data)
        if self.image_size % 32:
            raise ValueError(f"image_size must be a multiple of 32 (the encoder's stride), got {self.image_size}")
        if self.question_len < 2 or self.answer_len < 2:
            raise ValueError("question_len and answer_len must be at least 2 (<bos>/<eos> and one word)")

    @property
    def block_size(self) -> int:
        """Decoder positions: the prompt and the answer, less the last target."""
        return self.question_len + self.answer_len - 1

    def smoke(self) -> AnswerConfig:
        """Small images and decoder, 300 steps: a minute on one CPU thread for a few hundred questions."""
        return replace(self, image_size=128, n_embd=64, steps=300, batch_size=32, warmup_steps=20, checkpoint_every=100)


@dataclass
class AnswerData:
    """Distinct images, one row per (question, answer) turn, and the split of the images."""

    images: list[Path]
    image_of: np.ndarray  # (M,) the image index of each question
    questions: list[str]
    answers: list[str]
    qtypes: list[str]  # each question's type (the record's type field, else "all")
    splits: dict[str, np.ndarray]  # "train", "val", "test" -> sorted image indices
    source: str

    def __len__(self) -> int:
        return len(self.questions)

    def rows(self, split: str) -> np.ndarray:
        """Indices of the questions whose image is in ``split``."""
        return np.flatnonzero(np.isin(self.image_of, self.splits[split]))


def load_answer_data(cfg: AnswerConfig) -> AnswerData:
    """Read ``vqa.jsonl`` of ``cfg.data``: every turn an example, images split 80/10/10 with ``cfg.seed``."""
    source = llava_file(cfg.data, "vqa")
    index: dict[Path, int] = {}
    image_of, questions, answers, qtypes = [], [], [], []
    for record in read_llava(source):
        i = index.setdefault(record.image, len(index))
        for question, answer in record.turns:
            image_of.append(i)
            questions.append(question)
            answers.append(answer)
            qtypes.append(record.meta.get(cfg.type_field, "all"))
    images = list(index)
    splits = split_by_image(images, seed=cfg.seed)
    n = {s: int(np.isin(image_of, splits[s]).sum()) for s in splits}
    text = (f"own data: {source} ({len(images)} images, {len(questions)} questions; split by image "
            f"{len(splits['train'])}/{len(splits['val'])}/{len(splits['test'])} images, "
            f"{n['train']}/{n['val']}/{n['test']} questions)")  # fmt: skip
    return AnswerData(images, np.asarray(image_of), questions, answers, qtypes, splits, text)


def build_answer_tokenizer(data: AnswerData, cfg: AnswerConfig) -> CaptionTokenizer:
    """Word-level ids of the training questions' and answers' words (val and test words may be <unk>)."""
    rows = data.rows("train")
    texts = [data.questions[i] for i in rows] + [data.answers[i] for i in rows]
    return train_caption_tokenizer(texts, vocab_size=cfg.vocab_size, min_frequency=cfg.min_frequency)


def _word_ids(tokenizer: CaptionTokenizer, texts: Sequence[str], what: str) -> list[list[int]]:
    words = [caption_words(t) for t in texts]
    for i, w in enumerate(words):
        if not w:
            raise DataError(None, f"{what} {i} has no words (only spaces or punctuation): {texts[i]!r}")
    encs = tokenizer.tokenizer.encode_batch(words, is_pretokenized=True, add_special_tokens=False)
    return [e.ids for e in encs]


def encode_prompts(tokenizer: CaptionTokenizer, questions: Sequence[str], cfg: AnswerConfig) -> Tensor:
    """(M, question_len) prompts ``<pad>... <bos> question``, left-padded so that every answer starts after them."""
    Lq = cfg.question_len
    prompts = torch.full((len(questions), Lq), tokenizer.pad_id, dtype=torch.long)
    for row, q in enumerate(_word_ids(tokenizer, questions, "question")):
        ids = [tokenizer.bos_id, *q[-(Lq - 1) :]]
        prompts[row, Lq - len(ids) :] = torch.tensor(ids)
    return prompts


def encode_examples(
    tokenizer: CaptionTokenizer, questions: Sequence[str], answers: Sequence[str], cfg: AnswerConfig
) -> tuple[Tensor, Tensor]:
    """Inputs (M, block_size) and targets (M, block_size): ``<pad>.. <bos> question | answer <eos> <pad>..``.

    The first ``question_len`` positions of the inputs are the prompt (``inputs[:, :question_len]``); targets
    are -100 except where the next token is an answer word or ``<eos>``.
    """
    if len(questions) != len(answers):
        raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
    Lq, La = cfg.question_len, cfg.answer_len
    seqs = torch.full((len(questions), Lq + La), tokenizer.pad_id, dtype=torch.long)
    seqs[:, :Lq] = encode_prompts(tokenizer, questions, cfg)
    for row, a in enumerate(_word_ids(tokenizer, answers, "answer")):
        reply = [*a[: La - 1], tokenizer.eos_id]
        seqs[row, Lq : Lq + len(reply)] = torch.tensor(reply)
    targets = seqs[:, 1:].clone()
    targets[:, : Lq - 1] = -100  # the next token is still the question
    targets[targets == tokenizer.pad_id] = -100
    return seqs[:, :-1], targets


def build_answer_model(cfg: AnswerConfig, vocab_size: int, n_visual: int) -> MiniVLM:
    """A prefix-fusion MiniVLM over ``n_visual`` grid tokens of 1,280 channels (seeded)."""
    torch.manual_seed(cfg.seed)
    return MiniVLM(VLMConfig(vocab_size=vocab_size, block_size=cfg.block_size, n_layer=cfg.n_layer,
                             n_head=cfg.n_head, n_embd=cfg.n_embd, dropout=cfg.dropout, fusion="prefix",
                             d_visual=1280, n_visual=n_visual, projector=cfg.projector))  # fmt: skip


def answer_batches(
    inputs: Tensor, targets: Tensor, feats: Tensor, image_rows: np.ndarray, cfg: AnswerConfig
) -> Callable[[int], dict[str, Tensor]]:
    """``step -> batch`` for the engine: a seeded permutation of the examples per epoch (rebuilt on resume).

    ``image_rows[i]`` is the row of ``feats`` (N, P, 1280) holding example ``i``'s image.
    """
    size = min(cfg.batch_size, len(inputs))

    def batch(step: int) -> dict[str, Tensor]:
        pick = epoch_batch(len(inputs), size, step, cfg.seed)
        return {"idx": inputs[pick], "targets": targets[pick], "visual": feats[image_rows[pick]]}

    return batch


# The engine's loss: next-token cross-entropy where targets != -100, i.e. the answer tokens only (the captioner's).
answer_loss = caption_loss


def answer_fingerprint(cfg: AnswerConfig, inputs: Tensor, feats: Tensor) -> dict[str, object]:
    """What identifies a training run: the config (less run-only fields) and hashes of its examples and features."""
    config = {k: v for k, v in asdict(cfg).items() if k not in _RUN_ONLY}
    return {"recipe": "answers-1", "config": config, "examples": fingerprint(inputs), "features": fingerprint(feats)}


def train_answers(
    data: AnswerData,
    tokenizer: CaptionTokenizer,
    feats: Tensor,
    cfg: AnswerConfig,
    checkpoint_dir: str | Path | None = None,
    resume: str | Path | None = None,
    progress: bool = True,
) -> tuple[MiniVLM, History]:
    """Encode the training questions, build the model and train it through the engine (what 03.04 shows in cells).

    ``feats`` (len(data.images), P, 1280) are the images' grid features. With ``checkpoint_dir`` the run is
    checkpointed in ``<checkpoint_dir>/answers-<hash of its fingerprint>``; ``resume="latest"`` continues it or
    loads a finished one.
    """
    train = data.rows("train")
    inputs, targets = encode_examples(tokenizer, [data.questions[i] for i in train],
                                      [data.answers[i] for i in train], cfg)  # fmt: skip
    model = build_answer_model(cfg, tokenizer.vocab_size, feats.shape[1])
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = warmup_cosine(opt, cfg.warmup_steps, cfg.steps)
    batches = answer_batches(inputs, targets, feats, data.image_of[train], cfg)
    fit_cfg = FitConfig(steps=cfg.steps, grad_clip=1.0, precision=cfg.precision, device=cfg.device,
                        checkpoint_every=cfg.checkpoint_every, progress=progress, desc="VQA (own data)")  # fmt: skip
    ident = answer_fingerprint(cfg, inputs, feats)
    run_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"answers-{fingerprint(ident)[:16]}"
    history = fit(model, opt, batches, answer_loss, fit_cfg, scheduler=sched, run_dir=run_dir, resume=resume,
                  fingerprint=ident)  # fmt: skip
    return model.eval(), history


@torch.no_grad()
def answer_questions(
    model: MiniVLM, feats: Tensor, questions: Sequence[str], tokenizer: CaptionTokenizer, cfg: AnswerConfig,
    batch_size: int = 256,
) -> list[str]:  # fmt: skip
    """Greedy answers to ``questions``, each about the image whose features are the same row of ``feats``."""
    if len(feats) != len(questions):
        raise ValueError(f"{len(feats)} feature rows for {len(questions)} questions; give one row per question")
    prompts = encode_prompts(tokenizer, questions, cfg)
    device = model.lm_head.weight.device
    out: list[str] = []
    for s in range(0, len(questions), batch_size):
        ids = generate(model, feats[s : s + batch_size].to(device), prompts[s : s + batch_size].to(device),
                       cfg.answer_len, eos_id=tokenizer.eos_id)  # fmt: skip
        out.extend(tokenizer.decode(ids[:, cfg.question_len :].cpu()))
    return out


def _normal(text: str) -> str:
    return " ".join(caption_words(text))


def answer_accuracy(predicted: Sequence[str], answers: Sequence[str], qtypes: Sequence[str]) -> dict[str, float]:
    """Exact-match accuracy of the normalised words (lowercase, no punctuation): per question type and "overall"."""
    hits = np.array([_normal(p) == _normal(a) for p, a in zip(predicted, answers, strict=True)])
    types = np.asarray(qtypes)
    out = {t: float(hits[types == t].mean()) for t in dict.fromkeys(qtypes)}
    out["overall"] = float(hits.mean()) if len(hits) else float("nan")
    return out


def prior_answers(data: AnswerData, split: str = "test") -> list[str]:
    """The question-only baseline: for each question of ``split`` the most frequent training answer to the same
    question (normalised), else to questions of its type, else the most frequent training answer."""
    by_question: dict[str, Counter[str]] = {}
    by_type: dict[str, Counter[str]] = {}
    overall: Counter[str] = Counter()
    for i in data.rows("train"):
        a = _normal(data.answers[i])
        by_question.setdefault(_normal(data.questions[i]), Counter())[a] += 1
        by_type.setdefault(data.qtypes[i], Counter())[a] += 1
        overall[a] += 1
    out = []
    for i in data.rows(split):
        counts = by_question.get(_normal(data.questions[i])) or by_type.get(data.qtypes[i]) or overall
        out.append(counts.most_common(1)[0][0])
    return out
