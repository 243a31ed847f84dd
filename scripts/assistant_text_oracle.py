"""Is the LM the bottleneck on the scene questions, or the visual tokens? Scenes given perfectly, through LoRA.

    python scripts/assistant_text_oracle.py --input text|objects|words|words4|regions|aligned [--steps 250] [--eval-every 50]
    python scripts/assistant_text_oracle.py --input aligned --align-only      # the alignment alone, its nearest words

The assistant's stage 2 on the Sort-of-CLEVR questions alone, with the scene given perfectly instead of as image
features: the recipe's LM (SmolLM2-135M-Instruct, frozen), LoRA (its rank, targets and learning rate), the engine,
steps of 16 one-question conversations from the assistant's 800 training scenes (6 questions each, drawn as the
recipe draws them), the recipe's question wording ("What shape is the red object? Answer with one word."). Every
``--eval-every`` steps the 50 held-out scenes' 36 questions are answered greedily (step 0: before training).

- ``text``: the scene written out before the question ("Scene: a blue circle at the top left, ... and a green square
  at the bottom right."): every object's colour, shape and quarter, in words the LM knows.
- ``objects``: the same facts as six visual tokens, one per object, at the ``<image>`` places: a one-hot of its
  colour and of its shape and its exact (x, y), through a two-layer MLP that trains with LoRA, as the recipe's
  projector does (ideal region tokens: what a perfect detector would give).
- ``words``: six visual tokens, each the mean of the LM's own input embeddings of the object's words ("red circle
  top left"), fixed: tokens that lie where the LM's words lie, as a language-aligned encoder's would.
- ``words4``: 24 visual tokens, four an object, each one of its words' embeddings in that order ("red", "circle",
  "top", "left"): the text's words without its articles, commas and order of objects.
- ``regions``: not an oracle: the recipe's region tokens (``mmhelpers.regions`` on the rendered scene, ten an
  image, standardised as ``Projector.init_region_scaling`` does) through a fresh two-layer MLP, as ``objects``.
- ``aligned``: the same region tokens, with the MLP first aligned to the LM's word embeddings on the training scenes'
  descriptions, token-wise as FILIP (Yao et al. 2021) aligns patches and words, here regions and phrases: each
  phrase ("blue circle top left", the mean of its words' embeddings) to its best-matching region token and each
  region token to its best-matching phrase, contrasted across a batch of 64 scenes (``--align-steps`` steps, no
  LM forward: the embedding table only), then scaled to the phrases' mean norm; stage 2 trains it with LoRA.

The non-relational answers (shape, left/right, top/bottom) are in every input; the relational ones (closest,
furthest, count) need exact places, which ``text``, ``words`` and ``words4`` give only as quarters.
"""

import argparse
import json
import time
from collections import defaultdict

import numpy as np
import torch
from torch import nn

from mmhelpers.data.sort_of_clevr import (
    COLORS,
    RELATIONAL,
    SHAPES,
    describe_scene,
    make_scenes,
    questions_for,
    render_scene,
)
from mmhelpers.engine import FitConfig, epoch_batch, fit, warmup_cosine
from mmhelpers.precision import autocast, resolve_precision
from mmhelpers.regions import image_region_features
from mmhelpers.scenarios.assistant.chat import collate, encode_chat, encode_prompt
from mmhelpers.scenarios.assistant.data import _scene_question
from mmhelpers.scenarios.assistant.model import Assistant
from mmhelpers.scenarios.assistant.recipe import AssistantConfig, _greedy, add_lora, load_lm, stop_ids


class ObjectTokens(nn.Module):
    """Per-object features (B, K, F) -> visual tokens (B, K, d): a two-layer MLP or (``words``) as they are; a
    padding row (a region feature vector whose last entry, presence, is 0) gives a zero token."""

    def __init__(self, dim: int, d_model: int, train: bool, n_tokens: int = 6, scale: float = 1.0):
        super().__init__()
        self.mlp = (
            nn.Sequential(nn.Linear(dim, 2 * d_model), nn.GELU(), nn.Linear(2 * d_model, d_model)) if train else None
        )
        self.n_tokens, self.scale, self.presence = n_tokens, scale, dim == 8

    def forward(self, grids: torch.Tensor, regions=None) -> torch.Tensor:
        if self.mlp is None:
            return grids
        out = self.mlp(grids) * self.scale
        return out * grids[..., -1:] if self.presence else out


def region_inputs(scenes) -> torch.Tensor:
    """(N, 10, 8) region features of the rendered scenes, standardised with the training scenes' statistics."""
    feats = image_region_features([render_scene(s) for s in scenes], 64, 10)
    rows = feats[:800].reshape(-1, 8)
    rows = rows[rows[:, -1] > 0][:, :-1]
    present = feats[..., -1:]
    return torch.cat([(feats[..., :-1] - rows.mean(0)) / rows.std(0).clamp_min(1e-3) * present, present], -1)


STOP_WORDS = {"a", "an", "at", "the", "and"}


def phrase_embeddings(text: str, embed: nn.Embedding, tok) -> torch.Tensor:
    """(P, d): each phrase of a description ("a blue circle at the top left, ... and a green square at ...", cut at
    commas and "and") as the mean of the LM's input embeddings of its words, articles and "at" left out."""
    phrases = [p for part in text.split(", ") for p in part.split(" and ")]
    out = []
    for phrase in phrases:
        words = " ".join(w for w in phrase.split() if w not in STOP_WORDS)
        out.append(embed(torch.tensor(tok(" " + words, add_special_tokens=False)["input_ids"])).float().mean(0))
    return torch.stack(out)


def align(tokens: ObjectTokens, feats: torch.Tensor, texts: list[str], embed: nn.Embedding, tok, steps: int,
          seed: int) -> dict[str, float]:  # fmt: skip
    """FILIP-style alignment of the region MLP's outputs with the phrases of each scene's description
    (``feats`` and ``texts``: the training scenes'): a scene and a description score the mean of each phrase's
    best region and each region's best phrase (cosine), contrasted across a batch of 64 scenes both ways; then
    the tokens are scaled to the phrases' mean norm. Returns the mean loss of the first and last 20 steps."""
    F = torch.nn.functional
    with torch.no_grad():
        phrases = torch.stack([phrase_embeddings(t, embed, tok) for t in texts])  # (N, P, d)
    unit = F.normalize(phrases, dim=-1)
    opt = torch.optim.AdamW(tokens.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(seed)
    temperature, losses = 0.05, []
    for _ in range(steps):
        pick = torch.randperm(len(texts), generator=gen)[:64]
        v = F.normalize(tokens.mlp(feats[pick]), dim=-1)  # (B, K, d)
        present = feats[pick][..., -1] > 0  # (B, K)
        s = torch.einsum("ikd,jpd->ijkp", v, unit[pick]).masked_fill(~present[:, None, :, None], -2.0)
        t2i = s.max(2).values.mean(-1)  # (images, texts): each phrase's best region
        i2t = (s.max(3).values * present[:, None]).sum(-1) / present.sum(-1)[:, None].clamp_min(1)
        logits, target = (t2i + i2t) / 2 / temperature, torch.arange(len(pick))
        loss = (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    with torch.no_grad():  # the tokens' mean norm to the phrases'
        out = tokens.mlp(feats)
        tokens.scale = float(phrases.norm(dim=-1).mean() / out[feats[..., -1] > 0].norm(dim=-1).mean())
    return {"first": sum(losses[:20]) / 20, "last": sum(losses[-20:]) / 20, "scale": tokens.scale}


def object_features(scene, mode: str, embed: nn.Embedding, tok) -> torch.Tensor:
    """(6, F): a scene's objects as one-hots and exact places (``objects``) or mean word embeddings (``words``);
    (24, d) for ``words4``: each object's four words in order, each word the mean embedding of its tokens."""
    rows = []
    for color, shape, x, y in scene.objects:
        if mode == "objects":
            xy = [2 * x / (scene.size - 1) - 1, 2 * y / (scene.size - 1) - 1]
            rows.append(
                torch.tensor([c == color for c in COLORS] + [s == shape for s in SHAPES] + xy, dtype=torch.float)
            )
        else:
            mid = (scene.size - 1) / 2
            words = f"{color} {shape} {'top' if y < mid else 'bottom'} {'left' if x < mid else 'right'}"
            if mode == "words4":
                for w in words.split():
                    rows.append(
                        embed(torch.tensor(tok(" " + w, add_special_tokens=False)["input_ids"])).float().mean(0)
                    )
            else:
                ids = torch.tensor(tok(" " + words, add_special_tokens=False)["input_ids"])
                rows.append(embed(ids).float().mean(0))
    return torch.stack(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--input", choices=("text", "objects", "words", "words4", "regions", "aligned"), default="text")
    parser.add_argument("--align-steps", type=int, default=1000, help="aligned: steps of the FILIP alignment")
    parser.add_argument("--align-only", action="store_true", help="aligned: stop after the alignment, print the "
                        "nearest words of the first held-out scene's region tokens")  # fmt: skip
    parser.add_argument("--steps", type=int, default=250)
    parser.add_argument("--eval-every", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", default=None, help="write the curve as JSON here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    cfg = AssistantConfig(data="real")
    t0 = time.perf_counter()
    scenes = make_scenes(900, seed=cfg.data_seed + 1000)  # the assistant's scenes: 800 train, 50 val, 50 test
    rng = np.random.default_rng([cfg.data_seed, 2])
    lm, tok = load_lm(cfg)
    text = args.input == "text"
    n_tokens = {"text": 0, "objects": 6, "words": 6, "words4": 24}.get(args.input, 10)
    with torch.no_grad():
        if args.input in ("regions", "aligned"):
            feats = list(region_inputs(scenes))
        else:
            feats = [torch.zeros(1) if text else object_features(s, args.input, lm.get_input_embeddings(), tok)
                     for s in scenes]  # fmt: skip

    def prompt(scene, q) -> str:
        return (f"Scene: {describe_scene(scene)}.\n" if text else "") + _scene_question(q.qtype, q.color)

    train = []
    for k, scene in enumerate(scenes[:800]):
        qs = questions_for(scene)
        for j in rng.choice(len(qs), size=cfg.questions_per_scene, replace=False):
            q = qs[int(j)]
            train.append((encode_chat(tok, [(prompt(scene, q), q.answer)], n_tokens, cfg.system), k))
    test = [(prompt(s, q), q, 850 + i) for i, s in enumerate(scenes[850:900]) for q in questions_for(s)]
    torch.manual_seed(cfg.seed)
    model = Assistant(lm, feat_dim=8, side=1)
    dim = 8 if args.input in ("regions", "aligned") else 10
    model.projector = ObjectTokens(
        dim, lm.config.hidden_size, args.input in ("objects", "regions", "aligned"), n_tokens
    )
    aligned = None
    if args.input == "aligned":
        aligned = align(model.projector, torch.stack(feats[:800]), [describe_scene(s) for s in scenes[:800]],
                        lm.get_input_embeddings(), tok, args.align_steps, cfg.seed)  # fmt: skip
        print("alignment:", json.dumps({k: round(v, 3) for k, v in aligned.items()}), flush=True)
        if args.align_only:  # each region token of the first held-out scene: its nearest words in the LM's table
            table = torch.nn.functional.normalize(lm.get_input_embeddings().weight.float(), dim=-1)
            print(describe_scene(scenes[850]))
            with torch.no_grad():
                tokens = torch.nn.functional.normalize(model.projector.mlp(feats[850]), dim=-1)
            for k in range(int((feats[850][:, -1] > 0).sum())):
                print(f"region {k}:", [tok.decode([i]) for i in (table @ tokens[k]).topk(5).indices.tolist()])
            return
    add_lora(model, cfg)
    device = torch.device("cpu")
    precision = resolve_precision(cfg.precision, device)
    stop = stop_ids(tok)

    def greedy(m, batch) -> list[list[int]]:
        """Up to 4 new tokens each, greedy: the recipe's loop; text alone through transformers' generate."""
        if not text:
            return _greedy(m, batch, 4, stop)
        out = m.lm.generate(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], max_new_tokens=4,
                            do_sample=False, eos_token_id=sorted(stop), pad_token_id=tok.pad_token_id)  # fmt: skip
        rows = out[:, batch["input_ids"].shape[1] :].tolist()
        return [row[: next((k for k, t in enumerate(row) if t in stop), len(row))] for row in rows]

    @torch.no_grad()
    def evaluate(m) -> dict[str, float]:
        right, total = defaultdict(int), defaultdict(int)
        with autocast(precision, device):
            for a in range(0, len(test), 64):
                chunk = test[a : a + 64]
                batch = collate([encode_prompt(tok, p, n_tokens, cfg.system) for p, _, _ in chunk], tok.pad_token_id,
                                left_pad=True)  # fmt: skip
                batch["grids"] = torch.stack([feats[i] for _, _, i in chunk])
                for (_, q, _), ids in zip(chunk, greedy(m, batch), strict=True):
                    reply = tok.decode(ids, skip_special_tokens=True).strip().lower().rstrip(".")
                    for key in (q.qtype, "relational" if q.qtype in RELATIONAL else "non_relational"):
                        total[key] += 1
                        right[key] += reply == q.answer
        return {k: right[k] / total[k] for k in total}

    curve = {0: evaluate(model)}
    print("step 0:", json.dumps({k: round(v, 3) for k, v in curve[0].items()}), flush=True)

    def batch(step: int):
        pick = [train[k] for k in epoch_batch(len(train), 16, step, cfg.seed + 2)]
        return collate([e for e, _ in pick], tok.pad_token_id) | {"grids": torch.stack([feats[i] for _, i in pick])}

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=cfg.stage2_lr, weight_decay=0.0)
    sched = warmup_cosine(opt, cfg.warmup_steps, args.steps, cfg.min_lr_factor)
    fit_cfg = FitConfig(steps=args.steps, precision=cfg.precision, eval_every=args.eval_every, desc=args.input)
    hist = fit(model, opt, batch, lambda m, b: m(**b), fit_cfg, scheduler=sched, evaluate=evaluate)
    for e in hist.evals:
        curve[e["step"]] = {k: v for k, v in e.items() if k != "step"}
        print(f"step {e['step']}:", json.dumps({k: round(v, 3) for k, v in curve[e["step"]].items()}), flush=True)
    print(f"{time.perf_counter() - t0:.0f} s, {args.threads} threads, training seed {cfg.seed}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"input": args.input, "alignment": aligned, "curve": curve, "threads": args.threads, "batch": 16,
                       "seconds": time.perf_counter() - t0}, f, indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
