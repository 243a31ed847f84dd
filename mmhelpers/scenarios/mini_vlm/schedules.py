"""The sizes the mini-VLM notebooks (03.01-03.05) run at: one place, so that every notebook builds the same configs.

- ``"full"``: the committed results (``results/mini_vlm.json``), what ``DATA="real"`` runs: the captioning recipe's
  and the VQA recipe's defaults (``CaptionConfig``, ``VQAConfig``: 7,500 VQA steps), 500-step VQA baselines.
- ``"short"``: the embedded default, what ``make notebooks`` runs (the five notebooks in a few minutes on 2 cores):
  the same VQA model on two fifths of the schedule (:func:`short_vqa_config`), 150-step baselines (enough for
  the question-only one to reach the answer priors), and a smaller captioning run, decoder included, on the
  generated scenes (:func:`short_caption_config`). The same recipes, in about a fifth of the time.
- ``"smoke"``: ``SMOKE=True``, for the tests (``CaptionConfig.smoke``, ``VQAConfig.smoke``).

``SCHEDULE="auto"`` (the notebooks' default) picks ``"full"`` for ``DATA="real"`` and ``"short"`` for
``DATA="embedded"`` or your own folder; ``SMOKE=True`` overrides it. With your own folder (see
:mod:`~mmhelpers.data.llava_folder`) the captioning config reads its ``captions.jsonl`` and the VQA
part is :mod:`~mmhelpers.scenarios.mini_vlm.answers` on its ``vqa.jsonl`` (``answers``: ``AnswerConfig``, its
``.smoke()`` with ``SMOKE``; checkpoints under ``answers_dir``). The VQA checkpoints of each schedule have their own folder
(``<cache>/vqa/<schedule>_seed<seed>``) and the captioning checkpoints are keyed by their config, so the three
never meet; 03.05 loads what 03.04 trained with the same parameters (``RESUME="latest"``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

from mmhelpers.data.llava_folder import is_own_data
from mmhelpers.paths import cache_root
from mmhelpers.scenarios.mini_vlm.answers import AnswerConfig
from mmhelpers.scenarios.mini_vlm.captioning import CaptionConfig
from mmhelpers.scenarios.mini_vlm.vqa import VQAConfig

__all__ = ["SCHEDULES", "NotebookConfigs", "notebook_configs", "short_caption_config", "short_vqa_config"]

SCHEDULES = ("full", "short", "smoke")
BASELINE_STEPS = {"full": 500, "short": 150, "smoke": 100}  # VQA baselines' steps ("auto")


def short_vqa_config(**overrides: object) -> VQAConfig:
    """The embedded default's VQA run: 3,000 steps instead of 7,500 (two fifths of the full run's schedule).

    The same model and recipe as the full run on two fifths of its schedule (curriculum 500 steps instead of
    1,000, warm-up 100, validation every 250) and 500 test scenes instead of 1,000. With the earlier colour-slot
    front end, seed 0's shape questions left their plateau after about 1,500 steps, all non-relational questions
    ended at 100% and the relational ones only started to rise above their answer priors. With the region front
    end and the earlier 2-layer decoder with a plain cosine schedule (seed 0, 2 threads, 2026-12-03): 99.9%
    non-relational, 40.6% relational (majority answer 33%), 2.2 min of VQA training, 5.1 min for the five
    notebooks; not re-measured with the 3-layer recipe (a step costs about 1.5x), the distance bias and the
    relational auxiliary loss. The full run (``DATA="real"`` or
    ``SCHEDULE="full"``) is what ``results/mini_vlm.json`` holds.
    """
    base = dict(steps=3000, warmup_steps=100, curriculum_steps=500, eval_every=250, checkpoint_every=500,
                n_scenes_test=500)  # fmt: skip
    return VQAConfig(**(base | overrides))  # type: ignore[arg-type]


def short_caption_config(data: str = "embedded", seed: int = 0, device: str = "auto") -> CaptionConfig:
    """The embedded default's captioning run: the same recipe with a smaller decoder, fewer images and steps.

    A decoder of 2 layers of width 64 (full: 3 of 128; on the template captions the larger one took 2.5x as
    long and captioned no better at this budget), 600 scenes (400 / 100 / 100) at 128 px, so 4x4 grid cells
    (full: 1,000 at 224 px, 7x7 cells), a text-only corpus of 2,000 more scenes (full: 4,000), 150
    pre-training steps of 64 captions (full: 300 of 128) and 400 fine-tuning steps of 32 per model (full: 250
    of 64). On the 100 test scenes (seed 0), 200 fine-tuning steps left the captions below the nearest-neighbour
    baseline (CIDEr 0.89 against 1.07), 300 just above it (1.17, BLEU-4 still below); 400 reach CIDEr 1.45 and
    BLEU-4 0.70 (nearest neighbour 1.07 and 0.60, most frequent caption 0.67 and 0.38).
    """
    return replace(CaptionConfig(data=data, seed=seed, device=device), split=(400, 100, 100), n_lm_scenes=2000,
                   image_size=128, n_layer=2, n_embd=64, pretrain_steps=150, pretrain_batch_size=64,
                   finetune_steps=400, finetune_batch_size=32, warmup_steps=10, checkpoint_every=50)  # fmt: skip


@dataclass
class NotebookConfigs:
    """What a mini-VLM notebook runs: the schedule's name, both recipes' configs, the baselines' steps."""

    schedule: str  # "full" | "short" | "smoke"
    caption: CaptionConfig
    vqa: VQAConfig
    baseline_steps: int | None  # VQA baselines' training steps (None: as many as the full model)
    vqa_dir: Path  # the VQA checkpoints: <vqa_dir>/full, <vqa_dir>/question_only, <vqa_dir>/image_only
    own: bool = False  # DATA is your own folder
    answers: AnswerConfig | None = None  # own data: the VQA recipe on its vqa.jsonl
    answers_dir: Path | None = None  # own data: where its checkpoints go


def notebook_configs(
    data: str,
    smoke: bool = False,
    seed: int = 0,
    device: str = "auto",
    schedule: str = "auto",
    baseline_steps: int | str | None = "auto",
) -> NotebookConfigs:
    """The configs of the notebooks' ``DATA``, ``SMOKE``, ``SEED``, ``DEVICE``, ``SCHEDULE`` and ``BASELINE_STEPS``."""
    if schedule not in ("auto", "full", "short"):
        raise ValueError(f"SCHEDULE must be 'auto', 'full' or 'short', got {schedule!r}")
    if smoke:
        name = "smoke"
    elif schedule == "auto":
        name = "full" if data == "real" else "short"
    else:
        name = schedule
    if name == "smoke":
        caption = replace(CaptionConfig(seed=seed, device=device).smoke(), data=data)
        vqa = VQAConfig.smoke(seed=seed, device=device)
    elif name == "short":
        caption = short_caption_config(data, seed, device)
        vqa = short_vqa_config(seed=seed, device=device)
    else:
        caption = CaptionConfig(data=data, seed=seed, device=device)
        vqa = VQAConfig(seed=seed, device=device)
    steps = BASELINE_STEPS[name] if baseline_steps == "auto" else baseline_steps
    if steps is not None and not isinstance(steps, int):
        raise ValueError(f"BASELINE_STEPS must be 'auto', None or a number of steps, got {baseline_steps!r}")
    configs = NotebookConfigs(name, caption, vqa, steps, cache_root() / "vqa" / f"{name}_seed{seed}")
    if is_own_data(data):
        answers = AnswerConfig(data=data, seed=seed, device=device)
        configs.own, configs.answers = True, answers.smoke() if name == "smoke" else answers
        configs.answers_dir = cache_root() / "answers"
    return configs
