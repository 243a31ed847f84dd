"""The assistant's recipe, as LLaVA trains it: align a projector to a frozen LM, then instruction-tune with LoRA.

    cfg = AssistantConfig(data="real")                 # or AssistantConfig().smoke(): a tiny random Llama, seconds
    run = prepare(cfg)                                 # data, LM + tokenizer, cached image grids, the model
    h1 = train_stage(run, 1, checkpoint_dir=...)       # stage 1: the projector alone, on captions
    h2 = train_stage(run, 2, checkpoint_dir=...)       # stage 2: projector + LoRA adapters, on the whole mixture
    replies = answer(run, images, questions)           # greedy, batched, with a KV cache; streamer= for chat

1. **Data** (:mod:`.data`): one conversation per example in the LM's own chat template, the image as
   ``side*side`` placeholder tokens, the loss on the replies only (:mod:`.chat`).
2. **Image grids**: the packaged EfficientNet-Lite0's 7x7x1280 grid at 224 px, frozen, cached by content, and
   average-pooled to ``side x side`` once (the projector would pool the same way), so a batch carries 16 visual
   tokens, not 49.
3. **Stage 1 (alignment)**: the LM and the encoder frozen; only the projector (two linear layers, 2.1 M
   parameters for SmolLM2) trains, on the training images' captions.
4. **Stage 2 (instruction tuning)**: the projector keeps training and LoRA adapters (peft's
   ``inject_adapter_in_model``, so the LM keeps its own class and attribute names) join it on the attention projections
   (``lora_targets``; the MLP's too on a GPU); or ``finetune="frozen"``: the projector alone again, on the mixture.
   With a caption corpus (``data.corpus``: Flickr8k's captions of the photos not held out), ``corpus_steps`` more
   steps of captions as text-only conversations are spread among the mixture's, as LLaVA mixes text-only data in.
5. **Answers**: greedy decoding with transformers' KV cache (:func:`answer`), any streamer with
   ``put``/``end`` (transformers' ``TextStreamer``, ``TextIteratorStreamer``) for chat; in fp32
   (``decode_precision``) whatever precision trained.
6. **Region phrases** (``region_phrases=True``, the default; off gives the plain LLaVA recipe): each image's colour
   regions written as text before its first question in stage 2 and in answers, each region as the training
   descriptions' phrase it matches (:func:`fit_region_phrases`, :mod:`mmhelpers.region_phrases`), as LENS puts a
   tagger in front of a frozen LM. It learns from the training scenes' descriptions, which name every object.

A tiny random Llama (``lm="tiny"``, same code path) cannot be steered through a projector alone, as a pretrained
LM can; so the smoke configuration first pre-trains it on the training replies as text (stage 0) and then
freezes it. Everything trains through :func:`mmhelpers.engine.fit`, checkpointed under a key of the settings.
"""

from __future__ import annotations

import hashlib
import json
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from mmhelpers.engine import FitConfig, History, epoch_batch, eval_mode, fit, length_grouped_batch, warmup_cosine
from mmhelpers.features import fingerprint
from mmhelpers.image_grids import pooled_grids
from mmhelpers.lm import SMOLLM2, load_causal_lm, smollm2_tokenizer, tiny_llama
from mmhelpers.precision import autocast, resolve_precision
from mmhelpers.region_phrases import RegionTagger, fit_tagger, phrase_vector, write_phrases
from mmhelpers.regions import image_region_features
from mmhelpers.scenarios.assistant.chat import EncodedChat, add_image_token, collate, encode_chat, encode_prompt
from mmhelpers.scenarios.assistant.data import CAPTION_PROMPTS, InstructionData, load_instructions
from mmhelpers.scenarios.assistant.model import Assistant

__all__ = [
    "AssistantConfig",
    "AssistantRun",
    "prepare",
    "load_lm",
    "notebook_config",
    "add_lora",
    "stage_rows",
    "train_stage",
    "reply_loss",
    "answer",
    "stop_ids",
    "scene_prompt",
    "fit_region_phrases",
]

TINY = "tiny"  # AssistantConfig.lm: a randomly initialised small Llama with SmolLM2's tokenizer
ATTENTION_PROJECTIONS = ("q_proj", "k_proj", "v_proj", "o_proj")  # Llama's names; LoRA's default targets here
MLP_PROJECTIONS = ("gate_proj", "up_proj", "down_proj")
_EVAL_FIELDS = ("max_new_tokens", "num_beams", "length_penalty", "eval_batch_size", "decode_precision", "device", "checkpoint_every")
_LATER = {  # fields a stage's checkpoint does not depend on: those of the stages after it
    0: ("stage1_steps", "stage1_lr", "stage1_lm"),  # stage 0 batches as stage 1 does: stage1_batch_size counts
    1: (
        "region_phrases",  # stages 0 and 1 read the plain prompts
        "phrase_steps",
        "phrase_coverage",
        "finetune",
        "stage2_steps",
        "stage2_batch_size",
        "stage2_lr",
        "stage2_captions",
        "corpus_steps",
        "corpus_batch_size",
        "lora_r",
        "lora_alpha",
        "lora_dropout",
        "lora_targets",
    ),
}


@dataclass
class AssistantConfig:
    """Data, language model, visual tokens, the two stages and decoding; ``smoke()`` runs in seconds."""

    data: str = "real"  # "real" (Flickr8k + MNIST from the mirror) | "embedded" | your folder (see .data)
    seed: int = 0  # training: initialisation, LoRA, batch order
    data_seed: int = 0  # splits and generated data, the same for every training seed (0: the mini VLM's split)
    lm: str = SMOLLM2  # SMOLLM2 (offline) | a hub name or folder of any causal LM | "tiny" (random, tests)
    image_size: int = 224  # encoder input: a (image_size/32)^2 grid
    side: int = 4  # visual tokens per side after pooling: side*side tokens per image
    attention: str = "causal"  # "causal" (LLaVA, nanoVLM) | "prefix" (PaliGemma: image tokens see each other)
    coords: float = 0.0  # > 0: each visual token's grid (x, y), scaled to +-coords, joins the projector's input
    # > 0: this many more visual tokens, one per colour region of the image (mmhelpers.regions: place, shape and
    # colour from a classical segmentation at region_size px; rows past an image's last region are zero)
    regions: int = 0
    region_size: int = 64
    # LENS-style (Berrios et al. 2023): in stage 2 and in answers, each image's colour regions written as text before
    # its first question, "Scene: a blue circle at the top left, ... and a green square at the bottom right.", each
    # region as the phrase of the training descriptions it matches best (mmhelpers.region_phrases, learned in
    # phrase_steps steps with no LM forward from data.descriptions, the training scenes'); images whose regions match
    # none get no text. Stages 0 and 1 read the plain prompts, so their checkpoints do not depend on it. A scene's
    # text is about 50 tokens (max_length 160). Data with no descriptions (your own folder) gets no text, with a
    # warning. Off: the plain LLaVA recipe, whose scene answers stay near the question prior (see the README).
    region_phrases: bool = True
    phrase_steps: int = 1000
    # an image gets region phrases only when at least this share of its regions match a training phrase: the 1,000
    # Flickr8k photos match a median of 11% of their colour patches (6 of them 75% or more; none of the 100 test
    # photos), the 900 real-data scenes 83% or more (the seed-0 tagger, 2026-12-05). 0: every matched region written,
    # which put the palette's colour words into photo captions (README)
    phrase_coverage: float = 0.75
    # data sizes (images per split: train, val, test)
    caption_split: tuple[int, int, int] = (800, 100, 100)
    scenes: tuple[int, int, int] = (800, 50, 50)
    questions_per_scene: int = 6
    scene_turns: int = 1  # questions per training conversation (LLaVA's multi-turn examples); held out: one each
    describe_scenes: bool = False  # a caption per training scene naming each object and its place (stage 1 too)
    digits: tuple[int, int, int] = (800, 50, 50)
    max_length: int = 160  # tokens per conversation (the end is cut beyond); 96 holds the plain prompts
    # batches of conversations of similar length (transformers' group_by_length), in stages 1 and 2: a random batch
    # of the real data pads 15% of stage 1's tokens and 25% of stage 2's (scene questions with their region phrases
    # are about twice a caption's length), a grouped one under 1%: stage 1 took 5.7 min a seed against 8.0 (2026-12-06)
    group_by_length: bool = True
    # the system message of every conversation: "" an empty one; None the template's default (SmolLM2's "You are a
    # helpful AI assistant named SmolLM, ...": 16 more tokens per example, a quarter of a one-word question's 62)
    system: str | None = ""
    # stage 0 (tiny LM only): text-only pre-training of the LM on the training replies
    stage0_steps: int = 0
    stage0_lr: float = 3e-3
    # stage 1: projector alone, on the captions
    stage1_steps: int = 250
    stage1_batch_size: int = 16
    stage1_lr: float = 1e-3
    stage1_lm: bool = False  # also train the LM in stage 1: only for a tiny random LM, which a projector cannot steer
    # stage 2: projector + LoRA ("lora") or the projector alone ("frozen"), on the mixture
    finetune: str = "lora"
    stage2_steps: int = 250
    stage2_batch_size: int = 16
    stage2_lr: float = 5e-4
    stage2_captions: int | None = None  # captions of each training image in stage 2 (None: all of them)
    # corpus steps: this many more stage-2 steps, spread evenly among the mixture's, each a batch of corpus_batch_size
    # captions from data.corpus as text-only conversations (a caption prompt, the caption, no image), as LLaVA mixes
    # text-only conversations in: the adapters read the wording of ten times the training photos' captions (the
    # 39,455 of Flickr8k's photos outside val/test, which the mini VLM pre-trains on). Data without a corpus
    # (embedded, your folder) gets none. Text alone, without the photo steps, turned the captions generic (README)
    corpus_steps: int = 50
    corpus_batch_size: int = 32
    lora_r: int = 16
    lora_alpha: int = 32
    lora_dropout: float = 0.0
    # attention only on a CPU: a stage-2 step took 2.3 s (stage 1: 1.8 s) on idle cores; on all seven projections,
    # 4.1 s on cores shared with another job (not re-measured idle)
    lora_targets: tuple[str, ...] = ATTENTION_PROJECTIONS
    warmup_steps: int = 20
    min_lr_factor: float = 0.1
    # decoding
    max_new_tokens: int = 24
    num_beams: int = 3  # captions: beam search (transformers' generate), as the mini VLM's are scored; answers: greedy
    # beam search ranks finished captions by log-probability / length**length_penalty (transformers' generate): 1.0
    # (its default) favours longer captions, 0.0 ranks by log-probability alone. Chosen on the validation photos of
    # the three seeds of 2026-12-06: BLEU-4 0.135 -> 0.144 (ahead in every seed), CIDEr-D 0.280 either way
    # (scripts/assistant_captions.py --decoding); on the test photos less: 0.126 -> 0.131, two seeds of three (README)
    length_penalty: float = 0.0
    eval_batch_size: int = 32
    # precision of every decoded answer and caption; None: the run's. bf16 autocast's scores moved with the thread
    # count, and a batch of one (chat) decodes faster in fp32 on a CPU; the scores of bf16-trained
    # weights: higher in fp32 in 6 of 6 seed/split pairs of the 2026-12-05 runs, within noise in those of 2026-12-06
    # (README); a batch of 32 captions with 3 beams takes about 1.2-1.5x as long
    decode_precision: str | None = "fp32"
    # the engine
    precision: str = "auto"  # "auto": bf16 autocast where the CPU has AMX (as here), else fp32
    device: str = "auto"
    checkpoint_every: int = 50

    def __post_init__(self) -> None:
        self.data = str(self.data)
        self.caption_split, self.scenes, self.digits = tuple(self.caption_split), tuple(self.scenes), tuple(self.digits)
        self.lora_targets = tuple(self.lora_targets)
        if self.finetune not in ("lora", "frozen"):
            raise ValueError(f"finetune must be 'lora' or 'frozen', got {self.finetune!r}")
        if self.image_size % 32 != 0:
            raise ValueError(f"image_size must be a multiple of 32 (the encoder's stride), got {self.image_size}")

    def smoke(self) -> AssistantConfig:
        """The same code path in seconds: a tiny random Llama pre-trained on the replies (stage 0), the embedded
        data, small images."""
        return replace(self, data="embedded" if self.data == "real" else self.data, lm=TINY, image_size=128,
                       side=2, caption_split=(120, 10, 10), scenes=(120, 4, 4), questions_per_scene=6,
                       digits=(200, 20, 20), stage0_steps=150, stage1_steps=150, stage1_batch_size=16,
                       stage1_lr=3e-3, stage2_steps=150, stage2_lr=3e-3, lora_r=8, lora_alpha=16,
                       warmup_steps=10, max_new_tokens=12, checkpoint_every=50, precision="fp32", stage1_lm=True,
                       phrase_steps=300, corpus_steps=0)  # fmt: skip

    def gpu(self) -> AssistantConfig:
        """A larger run for one GPU (``scripts/assistant_gpu.py``): all 49 visual tokens, stage 2 8x the steps at
        4x the batch, LoRA on all seven projections, bf16, 12 questions on each of 3,000 scenes and 3,000 digits.
        Without region phrases, corpus steps and length-grouped batches, decoded in bf16, as it ran.
        Stage 1 stays near five passes over the 4,000 captions (300 steps of 64): on an H200, 1,000 steps over-fit
        the projector (held-out caption loss 3.11 against 2.75 after 300)."""
        return replace(self, side=7, scenes=(3000, 50, 50), questions_per_scene=12, digits=(3000, 50, 50),
                       region_phrases=False, max_length=96, group_by_length=False, corpus_steps=0,
                       decode_precision=None, length_penalty=1.0,  # as its committed run (not yet run with them)
                       stage1_steps=300, stage1_batch_size=64, stage2_steps=2000, stage2_batch_size=64,
                       stage2_lr=2e-4, lora_r=32, lora_alpha=64, lora_targets=ATTENTION_PROJECTIONS + MLP_PROJECTIONS,
                       warmup_steps=100, eval_batch_size=128, precision="bf16", device="cuda")  # fmt: skip


@dataclass
class AssistantRun:
    """Everything a run holds: config, data, tokenizer, the model, image grids and encoded examples."""

    cfg: AssistantConfig
    data: InstructionData
    tokenizer: Any
    model: Assistant
    grids: Tensor  # (n_images, 1280, side, side), pooled, frozen
    encoded: dict[str, list[EncodedChat]]  # split -> the examples of data.samples[split], encoded
    histories: dict[int, History]
    regions: Tensor | None = None  # (n_images, cfg.regions, 8) region features (cfg.regions > 0)
    tagger: RegionTagger | None = None  # cfg.region_phrases: regions -> phrases
    scene_text: list[str] | None = None  # cfg.region_phrases: each image's regions as text ('' for none)
    plain: dict[int, EncodedChat] | None = None  # cfg.region_phrases: stage 1's captions without the text, built once

    def visual(self, rows: Sequence[int]) -> dict[str, Tensor]:
        """The visual inputs of images ``rows``: ``{"grids": ...}`` and, with region tokens, ``"regions"``."""
        out = {"grids": self.grids[list(rows)]}
        if self.regions is not None:
            out["regions"] = self.regions[list(rows)]
        return out

    @property
    def n_image_tokens(self) -> int:
        return self.model.n_image_tokens

    def describe(self, images: Sequence[str | Path | Any]) -> list[str]:
        """Your own images (paths or RGB arrays) as the text the model reads before a question ('' without
        ``cfg.region_phrases``): their regions, each as its best-matching training phrase; '' for an image where
        fewer than ``cfg.phrase_coverage`` of its regions match one (a photo, next to the training scenes)."""
        if self.tagger is None:
            return [""] * len(images)
        return [write_phrases(p) for p in self.tagger.tag(image_region_features(images, self.cfg.region_size,
                                                                                 PHRASE_REGIONS))]  # fmt: skip


PHRASE_REGIONS = 10  # regions an image for the region phrases (a Sort-of-CLEVR scene has six objects)


def scene_prompt(question: str, scene_text: str) -> str:
    """The question as the model reads it: after its image's region phrases (``cfg.region_phrases``), if any."""
    return f"Scene: {scene_text}.\n{question}" if scene_text else question


def _with_scene(turns: Sequence[tuple[str, str]], scene_text: str) -> list[tuple[str, str]]:
    return [(scene_prompt(q, scene_text) if k == 0 else q, a) for k, (q, a) in enumerate(turns)]


def fit_region_phrases(cfg: AssistantConfig, data: InstructionData, lm, tokenizer, progress: bool = True,
                       feats: Tensor | None = None) -> tuple[RegionTagger | None, list[str] | None]:  # fmt: skip
    """The region tagger learned from the training images' ``data.descriptions`` (the LM's input embeddings give
    each phrase its vector) and every image's regions written as text; ``(None, None)`` with a warning when no
    training image has a description. ``feats``: the images' region features, if already computed
    (``image_region_features(data.images, cfg.region_size, PHRASE_REGIONS)``)."""
    train = sorted({s.image for s in data.samples["train"] if s.image in data.descriptions})
    if len(train) < 2:
        warnings.warn("region_phrases: no training image has a description (data.descriptions), so no image gets "
                      "region phrases; set region_phrases=False to silence this", stacklevel=3)  # fmt: skip
        return None, None
    if feats is None:
        feats = image_region_features(data.images, cfg.region_size, PHRASE_REGIONS)
    embedding = lm.get_input_embeddings()
    tagger = fit_tagger(feats[train], [data.descriptions[i] for i in train],
                        lambda p: phrase_vector(p, tokenizer, embedding), steps=cfg.phrase_steps, seed=cfg.seed,
                        coverage=cfg.phrase_coverage, progress=progress)  # fmt: skip
    return tagger, [write_phrases(p) for p in tagger.tag(feats)]


def load_lm(cfg: AssistantConfig):
    """The config's causal LM and its tokenizer, with the image token added (and a pad token if it had none)."""
    if cfg.lm == TINY:
        tok = smollm2_tokenizer()
        add_image_token(tok)
        return tiny_llama(vocab_size=len(tok), hidden=64, layers=2, heads=4, seed=cfg.seed), tok
    lm, tok = load_causal_lm(cfg.lm)
    add_image_token(tok)
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    return lm, tok


def prepare(cfg: AssistantConfig, progress: bool = True, data: InstructionData | None = None) -> AssistantRun:
    """Load the data (or take ``data``), the LM and tokenizer, the cached grids; build the (untrained) model."""
    data = data or load_instructions(cfg.data, cfg.data_seed, cfg.caption_split, cfg.scenes, cfg.questions_per_scene,
                                     cfg.digits, cfg.scene_turns, cfg.describe_scenes)  # fmt: skip
    lm, tok = load_lm(cfg)
    grids = pooled_grids(data.images, cfg.image_size, cfg.side, progress)
    torch.manual_seed(cfg.seed)
    model = Assistant(lm, feat_dim=grids.shape[1], side=cfg.side, attention=cfg.attention, coords=cfg.coords,
                      regions=cfg.regions)  # fmt: skip
    regions = None
    if cfg.regions:
        regions = image_region_features(data.images, cfg.region_size, cfg.regions)
        model.projector.init_region_scaling(regions[sorted({s.image for s in data.samples["train"]})])
    tagger, texts = fit_region_phrases(cfg, data, lm, tok, progress) if cfg.region_phrases else (None, None)
    n = model.n_image_tokens
    encoded = {split: [encode_chat(tok, _with_scene(s.turns, texts[s.image] if texts else ""), n, cfg.system,
                                   cfg.max_length) for s in samples]
               for split, samples in data.samples.items()}  # fmt: skip
    cut = sum(e.truncated for e in encoded["train"])
    if cut:  # their last turns are never trained: a longer max_length, or fewer turns per conversation
        warnings.warn(f"{cut} of {len(encoded['train'])} training conversations are longer than "
                      f"max_length={cfg.max_length} tokens and lose their last turns", stacklevel=2)  # fmt: skip
    return AssistantRun(cfg, data, tok, model, grids, encoded, {}, regions, tagger, texts)


def add_lora(model: Assistant, cfg: AssistantConfig) -> int:
    """LoRA adapters (peft) on the LM's ``cfg.lora_targets`` projections; returns the adapter parameter count.

    ``inject_adapter_in_model`` keeps the LM's class, so the model code is unchanged; the base weights stay frozen
    and the checkpoint holds the adapters with the projector. Calling it twice is an error.
    """
    from peft import LoraConfig, inject_adapter_in_model

    if any("lora_" in n for n, _ in model.lm.named_parameters()):
        raise ValueError("the LM already carries LoRA adapters")
    present = {n.rsplit(".", 1)[-1] for n, _ in model.lm.named_modules()}
    targets = [t for t in cfg.lora_targets if t in present]
    if not targets:
        raise ValueError(f"none of lora_targets={cfg.lora_targets} is a module name of {type(model.lm).__name__}")
    config = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=targets)
    torch.manual_seed(cfg.seed)
    inject_adapter_in_model(config, model.lm)
    return sum(p.numel() for n, p in model.lm.named_parameters() if "lora_" in n)


def _batches(run: AssistantRun, rows: Sequence[int], batch_size: int, seed: int, text_only: bool = False,
             plain: bool = False) -> Callable[[int], dict[str, Tensor]]:  # fmt: skip
    split = run.encoded["train"]
    samples = run.data.samples["train"]
    pad = run.tokenizer.pad_token_id
    if text_only:  # stage 0: the same conversations without the image (and without region phrases)
        texts = {i: encode_chat(run.tokenizer, samples[i].turns, 0, run.cfg.system, run.cfg.max_length) for i in rows}
    elif plain and run.scene_text is not None:  # stage 1 reads the plain prompts: the same encodings as without them
        if run.plain is None:
            run.plain = {}
        for i in rows:
            if i not in run.plain:
                run.plain[i] = encode_chat(run.tokenizer, samples[i].turns, run.n_image_tokens, run.cfg.system,
                                           run.cfg.max_length)  # fmt: skip
        split = run.plain
    B = min(batch_size, len(rows))
    lengths = [len((texts if text_only else split)[i].input_ids) for i in rows]

    def batch(step: int) -> dict[str, Tensor]:
        if run.cfg.group_by_length:
            pick = [rows[k] for k in length_grouped_batch(lengths, B, step, seed)]
        else:
            pick = [rows[k] for k in epoch_batch(len(rows), B, step, seed)]
        examples = [texts[i] for i in pick] if text_only else [split[i] for i in pick]
        return collate(examples, pad_id=pad) | run.visual([samples[i].image for i in pick])

    return batch


def _corpus_batches(run: AssistantRun, batch_size: int, seed: int) -> Callable[[int], dict[str, Tensor]]:
    """Batch ``k`` of ``run.data.corpus`` as text-only caption conversations (the training prompts in turn),
    captions of similar length together with ``cfg.group_by_length``."""
    corpus, tok, cfg = run.data.corpus, run.tokenizer, run.cfg
    B = min(batch_size, len(corpus))
    unused = run.visual([0])  # the batch's visual inputs: no image token reads them
    if cfg.group_by_length:  # the caption's and its prompt's tokens: the template adds the same to every one
        prompt = [len(ids) for ids in tok(list(CAPTION_PROMPTS), add_special_tokens=False)["input_ids"]]
        lengths = [len(ids) + prompt[i % len(prompt)]
                   for i, ids in enumerate(tok(corpus, add_special_tokens=False)["input_ids"])]  # fmt: skip

    def batch(k: int) -> dict[str, Tensor]:
        if cfg.group_by_length:
            pick = length_grouped_batch(lengths, B, k, seed).tolist()
        else:
            pick = epoch_batch(len(corpus), B, k, seed).tolist()
        chats = [encode_chat(tok, [(CAPTION_PROMPTS[i % len(CAPTION_PROMPTS)], corpus[i])], 0, cfg.system,
                             cfg.max_length) for i in pick]  # fmt: skip
        return collate(chats, pad_id=tok.pad_token_id) | {k: v.expand(B, *v.shape[1:]) for k, v in unused.items()}

    return batch


def corpus_step(step: int, steps: int, n_corpus: int) -> int | None:
    """Which corpus batch step ``step`` of ``steps`` trains on (``n_corpus`` of them, spread evenly, the last step
    one of them), or None for a step of the mixture."""
    before = step * n_corpus // steps  # corpus steps before this one
    return before if (step + 1) * n_corpus // steps > before else None


def _interleaved(mixture: Callable[[int], dict[str, Tensor]], corpus: Callable[[int], dict[str, Tensor]], steps: int,
                 n_corpus: int) -> Callable[[int], dict[str, Tensor]]:  # fmt: skip
    def batch(step: int) -> dict[str, Tensor]:
        k = corpus_step(step, steps, n_corpus)
        return mixture(step - step * n_corpus // steps) if k is None else corpus(k)

    return batch


def _run_key(cfg: AssistantConfig, stage: int, **extra: Any) -> str:
    later = {f for k, fields in _LATER.items() if k >= stage for f in fields}
    blob = {k: v for k, v in asdict(cfg).items() if k not in _EVAL_FIELDS and k not in later} | extra | {"stage": stage}
    return hashlib.sha256(json.dumps(blob, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _loss(model: torch.nn.Module, batch: dict[str, Tensor]) -> Tensor:
    return model(**batch)


def stage_rows(run: AssistantRun, stage: int) -> list[int]:
    """The training examples a stage draws from: 0 all (as text), 1 the captions, 2 the mixture, in which
    ``stage2_captions`` keeps the first few captions of each image (stage 1 has had them all)."""
    samples = run.data.samples["train"]
    if stage in (0, 1):
        return [i for i, s in enumerate(samples) if stage == 0 or s.task == "caption"]
    if stage != 2:
        raise ValueError(f"stage must be 0, 1 or 2, got {stage!r}")
    rows, captions, keep = [], Counter(), run.cfg.stage2_captions
    for i, s in enumerate(samples):
        if s.task == "caption":
            captions[s.image] += 1
            if keep is not None and captions[s.image] > keep:
                continue
        rows.append(i)
    return rows


def train_stage(run: AssistantRun, stage: int, checkpoint_dir: str | Path | None = None, progress: bool = True,
                resume: str | Path | None = "latest", stop_at: int | None = None) -> History:  # fmt: skip
    """Train one stage through the engine; return its History (also kept in ``run.histories[stage]``).

    0: the whole (tiny) LM on the training replies as text, then frozen again; 1: the projector on the captions;
    2: projector + LoRA (or the projector alone, ``finetune="frozen"``) on the mixture, with ``cfg.corpus_steps``
    steps of ``run.data.corpus`` as text spread among its ``stage2_steps`` (none without a corpus). With ``checkpoint_dir`` a
    run's checkpoint goes under a key of its settings; ``resume="latest"`` continues one (a finished one loads).
    """
    cfg, model = run.cfg, run.model
    samples = run.data.samples["train"]
    rows = stage_rows(run, stage)
    if stage == 0:
        steps, lr, bs = cfg.stage0_steps, cfg.stage0_lr, cfg.stage1_batch_size
        model.lm.requires_grad_(True)
        model.projector.requires_grad_(False)
    elif stage == 1:
        steps, lr, bs = cfg.stage1_steps, cfg.stage1_lr, cfg.stage1_batch_size
        model.lm.requires_grad_(cfg.stage1_lm)
    else:
        steps, lr, bs = cfg.stage2_steps, cfg.stage2_lr, cfg.stage2_batch_size
        if cfg.finetune == "lora" and not any("lora_" in n for n, _ in model.lm.named_parameters()):
            add_lora(model, cfg)
    n_corpus = cfg.corpus_steps if stage == 2 and run.data.corpus else 0
    if stage == 2 and cfg.corpus_steps and not run.data.corpus:
        warnings.warn(f"corpus_steps={cfg.corpus_steps}: this data has no caption corpus (data.corpus), so stage 2 "
                      "trains on the mixture alone; set corpus_steps=0 to silence this", stacklevel=2)  # fmt: skip
    steps += n_corpus
    if not rows or steps < 1:
        raise ValueError(f"stage {stage} has {len(rows)} training examples and {steps} steps")
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    sched = warmup_cosine(opt, min(cfg.warmup_steps, steps // 2), steps, cfg.min_lr_factor)
    fit_cfg = FitConfig(steps=steps, grad_clip=1.0, precision=cfg.precision, device=cfg.device,
                        checkpoint_every=cfg.checkpoint_every, progress=progress, desc=f"stage {stage}")  # fmt: skip
    inputs = {"grids": fingerprint(run.grids)} | ({} if run.regions is None else {"regions": fingerprint(run.regions)})
    if n_corpus:
        inputs["corpus"] = fingerprint(run.data.corpus)
    key = _run_key(cfg, stage, data=fingerprint([(s.image, s.turns) for s in samples]), **inputs)
    run_dir = None if checkpoint_dir is None else Path(checkpoint_dir) / f"stage{stage}-{key}"
    t0 = time.perf_counter()
    try:
        batches = _batches(run, rows, bs, cfg.seed + stage, text_only=stage == 0, plain=stage == 1)
        if n_corpus:
            batches = _interleaved(batches, _corpus_batches(run, cfg.corpus_batch_size, cfg.seed + 3), steps, n_corpus)
        hist = fit(model, opt, batches, _loss, fit_cfg, scheduler=sched, run_dir=run_dir,
                   resume=resume if run_dir else None,
                   fingerprint={"recipe": "assistant-1", "key": key}, stop_at=stop_at)  # fmt: skip
    finally:
        if stage in (0, 1):  # the LM is frozen again for the stages that follow
            model.lm.requires_grad_(False)
            model.projector.requires_grad_(True)
    hist.seconds = hist.seconds or time.perf_counter() - t0
    run.histories[stage] = hist
    return hist


@torch.no_grad()
def reply_loss(run: AssistantRun, split: str = "test", task: str | None = "caption", batch_size: int | None = None
               ) -> float:  # fmt: skip
    """Mean cross-entropy per reply token of ``split``'s examples of ``task`` (all tasks: None), teacher-forced."""
    rows = [i for i, s in enumerate(run.data.samples[split]) if task is None or s.task == task]
    if not rows:
        raise ValueError(f"no {task or 'any'} examples in {split!r}")
    model, enc, samples = run.model, run.encoded[split], run.data.samples[split]
    device = next(model.projector.parameters()).device
    total, count = 0.0, 0
    bs = batch_size or run.cfg.eval_batch_size
    with eval_mode(model), autocast(resolve_precision(run.cfg.precision, device), device):
        for a in range(0, len(rows), bs):
            pick = rows[a : a + bs]
            batch = collate([enc[i] for i in pick], pad_id=run.tokenizer.pad_token_id)
            batch |= run.visual([samples[i].image for i in pick])
            batch = {k: v.to(device) for k, v in batch.items()}
            n = int((batch["labels"][:, 1:] != -100).sum())
            total += float(model(**batch)) * n
            count += n
    return total / count


def stop_ids(tokenizer) -> set[int]:
    """Token ids that end a reply: the tokenizer's end-of-sequence and, for ChatML templates, ``<|im_end|>``."""
    ids = {tokenizer.eos_token_id}
    end = tokenizer.convert_tokens_to_ids("<|im_end|>")
    if isinstance(end, int) and end != tokenizer.unk_token_id:
        ids.add(end)
    return {i for i in ids if i is not None}


@torch.no_grad()
def _greedy(model: Assistant, batch: dict[str, Tensor], max_new_tokens: int, stop: set[int], streamer=None
            ) -> list[list[int]]:  # fmt: skip
    """Greedy decoding of a left-padded batch with the LM's KV cache; the prompt pass uses the model's mask."""
    ids, mask, positions = batch["input_ids"], batch["attention_mask"], batch["image_positions"]
    embeds = model.embed(ids, batch["grids"], positions, batch.get("regions"))
    position_ids = (mask.cumsum(-1) - 1).clamp(min=0)  # as transformers' generate: left pads do not shift positions
    out = model.lm.model(inputs_embeds=embeds, attention_mask=model.lm_mask(mask, positions, embeds.dtype),
                         position_ids=position_ids, use_cache=True)  # fmt: skip
    past, last = out.past_key_values, out.last_hidden_state[:, -1]
    done = torch.zeros(len(ids), dtype=torch.bool, device=ids.device)
    replies: list[list[int]] = [[] for _ in range(len(ids))]
    stops = torch.tensor(sorted(stop), device=ids.device)
    for _ in range(max_new_tokens):
        nxt = model.lm.lm_head(last).argmax(-1)
        for row in (~done).nonzero().flatten().tolist():
            if not bool(torch.isin(nxt[row], stops)):
                replies[row].append(int(nxt[row]))
        if streamer is not None and not bool(done[0]) and not bool(torch.isin(nxt[0], stops)):
            streamer.put(nxt[:1].cpu())
        done |= torch.isin(nxt, stops)
        if bool(done.all()):
            break
        mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
        position_ids = position_ids[:, -1:] + 1
        out = model.lm.model(input_ids=nxt[:, None], attention_mask=mask, position_ids=position_ids,
                             past_key_values=past, use_cache=True)  # fmt: skip
        past, last = out.past_key_values, out.last_hidden_state[:, -1]
    if streamer is not None:
        streamer.end()
    return replies


@torch.no_grad()
def _beams(model: Assistant, batch: dict[str, Tensor], max_new_tokens: int, stop: set[int], num_beams: int, pad_id: int,
           length_penalty: float = 1.0) -> list[list[int]]:  # fmt: skip
    """Beam search with transformers' ``generate`` from the prompt's embeddings (it returns the new tokens only)."""
    embeds = model.embed(batch["input_ids"], batch["grids"], batch["image_positions"], batch.get("regions"))
    out = model.lm.generate(inputs_embeds=embeds, attention_mask=batch["attention_mask"], num_beams=num_beams,
                            max_new_tokens=max_new_tokens, do_sample=False, early_stopping=True,
                            length_penalty=length_penalty, eos_token_id=sorted(stop), pad_token_id=pad_id)  # fmt: skip
    replies = []
    for row in out.tolist():  # each reply ends at its first stop token (padding follows it)
        cut = next((k for k, t in enumerate(row) if t in stop), len(row))
        replies.append(row[:cut])
    return replies


def answer(run: AssistantRun, image_rows: Sequence[int] | Tensor, questions: Sequence[str],
           max_new_tokens: int | None = None, batch_size: int | None = None, streamer=None,
           progress: bool = False, num_beams: int = 1, regions: Tensor | None = None,
           scene_text: Sequence[str] | None = None) -> list[str]:  # fmt: skip
    """Greedy replies to ``questions[k]`` about image ``image_rows[k]`` (a row of ``run.grids``, or grids
    (N, C, h, w) of your own images from :func:`mmhelpers.image_grids.pooled_grids`, with their ``regions`` from
    :func:`mmhelpers.regions.image_region_features` when the model reads regions, and their ``scene_text`` from
    :meth:`AssistantRun.describe` when it reads region phrases). ``streamer`` (batch of one):
    transformers' ``TextStreamer``/``TextIteratorStreamer``, fed token by token. ``num_beams > 1``: beam search
    through transformers' ``generate`` on the prompt's embeddings (causal attention only), its finished replies
    ranked with ``run.cfg.length_penalty``."""
    model, tok = run.model, run.tokenizer
    if isinstance(image_rows, Tensor):
        visual = {"grids": image_rows} | ({} if regions is None else {"regions": regions})
        if scene_text is None and run.tagger is not None:
            raise ValueError("this model reads each image's region phrases before the question: pass "
                             "scene_text=run.describe(images) with your images' grids")  # fmt: skip
    else:
        visual = run.visual(image_rows)
        if scene_text is None and run.scene_text is not None:
            scene_text = [run.scene_text[int(i)] for i in image_rows]
    grids = visual["grids"]
    if len(grids) != len(questions):
        raise ValueError(f"{len(grids)} images but {len(questions)} questions")
    if scene_text is not None:
        if len(scene_text) != len(questions):
            raise ValueError(f"{len(scene_text)} scene texts but {len(questions)} questions")
        questions = [scene_prompt(q, t) for q, t in zip(questions, scene_text, strict=True)]
    if streamer is not None and len(questions) != 1:
        raise ValueError("a streamer follows one conversation: pass one image and one question")
    if num_beams > 1 and (streamer is not None or model.attention != "causal"):
        raise ValueError("beam search runs through transformers' generate: causal attention and no streamer only")
    device = next(model.projector.parameters()).device
    bs = batch_size or run.cfg.eval_batch_size
    n, stop, out = model.n_image_tokens, stop_ids(tok), []
    precision = resolve_precision(run.cfg.decode_precision or run.cfg.precision, device)
    with eval_mode(model), autocast(precision, device):
        for a in tqdm(range(0, len(questions), bs), desc="answers", disable=not progress):
            prompts = [encode_prompt(tok, q, n, run.cfg.system) for q in questions[a : a + bs]]
            batch = collate(prompts, pad_id=tok.pad_token_id, left_pad=True)
            batch |= {k: v[a : a + bs] for k, v in visual.items()}
            batch = {k: v.to(device) for k, v in batch.items() if k != "labels"}
            if streamer is not None:
                streamer.put(batch["input_ids"][0].cpu())  # the prompt: a TextStreamer(skip_prompt=True) skips it
            limit = max_new_tokens or run.cfg.max_new_tokens
            ids = (
                _greedy(model, batch, limit, stop, streamer)
                if num_beams == 1
                else _beams(model, batch, limit, stop, num_beams, tok.pad_token_id, run.cfg.length_penalty)
            )
            out += [tok.decode(r, skip_special_tokens=True).strip() for r in ids]
    return out


def notebook_config(
    data: str = "embedded", smoke: bool = False, seed: int = 0, device: str = "auto"
) -> AssistantConfig:
    """The notebooks' settings: ``smoke`` (a tiny random Llama, seconds); ``data="real"``: the full run
    (SmolLM2, Flickr8k + Sort-of-CLEVR + MNIST); the embedded default or your folder: a short run on SmolLM2
    (small images, a few hundred examples per task: the five notebooks in 13 min on 2 cores without AMX, fp32,
    with region phrases, 2026-12-05)."""
    cfg = AssistantConfig(data=data, seed=seed, device=device)
    if smoke:
        return cfg.smoke()
    if data == "real":
        return cfg
    return replace(cfg, image_size=128, caption_split=(200, 20, 20), scenes=(200, 10, 10), digits=(200, 20, 20),
                   stage1_steps=60, stage1_batch_size=8, stage2_steps=80, stage2_batch_size=8, warmup_steps=10,
                   max_new_tokens=20, corpus_steps=0)  # fmt: skip
