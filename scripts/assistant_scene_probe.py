"""Do the assistant's frozen visual tokens hold the Sort-of-CLEVR answers, and how many examples does reading them take?

    python scripts/assistant_scene_probe.py            # linear probes: about a minute on 2 cores once grids are cached
    python scripts/assistant_scene_probe.py --reader   # + the attention reader's learning curve: about 5 more minutes
    python scripts/assistant_scene_probe.py --regions  # + the same reader over region tokens: about 2 more minutes

Linear probes: for each colour and non-relational question type, a logistic regression on the pooled 4x4
EfficientNet-Lite0 grid (the 16 visual tokens the assistant sees, 224 px) of 800 training scenes, scored on 200
test scenes (the assistant's scene generator seed, 1000). A probe per colour is told which object to read.

``--reader``: what the assistant must learn instead. One small model for all questions: two transformer layers
over the 16 standardised cells and one question token (question type + colour embeddings), trained from scratch
on all 36 questions of the 800 training scenes for a given number of examples (steps of 16), with the cells'
places given as a learned embedding or as (x, y) coordinate channels (what ``AssistantConfig(coords=...)`` adds).
``--regions``: the same reader over what ``AssistantConfig(regions=10)`` adds instead of the cells: one token per
colour region (:func:`mmhelpers.regions.image_region_features` at 64 px: place, spread, colour, presence),
standardised as the projector does, with no place embedding (a token says where it is).
The README quotes these outputs beside the assistant's accuracy. Seed 0, 1 thread for the reader.
"""

import argparse

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from torch import nn

from mmhelpers.data.sort_of_clevr import COLORS, QTYPES, make_scenes, questions_for, render_scene
from mmhelpers.image_grids import pooled_grids
from mmhelpers.regions import image_region_features

N_TRAIN, N_TEST, SIDE = 800, 200, 4


class Reader(nn.Module):
    """Question token + projected visual tokens (16 cells with a place each, or region tokens, ``places=False``)
    -> two pre-norm transformer layers -> the answer, from the question token."""

    def __init__(self, dim_in: int, n_answers: int, coords: bool, d: int = 128, places: bool = True):
        super().__init__()
        self.proj = nn.Sequential(nn.Linear(dim_in, d), nn.GELU(), nn.Linear(d, d))
        self.place = nn.Parameter(torch.randn(SIDE * SIDE, d) * 0.02 if places else torch.zeros(1, d),
                                  requires_grad=places and not coords)  # fmt: skip
        self.qtype, self.color = nn.Embedding(len(QTYPES), d), nn.Embedding(len(COLORS), d)
        layer = nn.TransformerEncoderLayer(d, 4, 4 * d, 0.0, batch_first=True, norm_first=True)
        self.layers = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.out = nn.Linear(d, n_answers)

    def forward(self, cells, qtype, color):
        q = (self.qtype(qtype) + self.color(color))[:, None]
        return self.out(self.layers(torch.cat([q, self.proj(cells) + self.place], 1))[:, 0])


def reader_accuracy(cells: torch.Tensor, scenes, examples: int, coords: bool, seed: int = 0, places: bool = True
                    ) -> dict[str, float]:  # fmt: skip
    if coords:  # (x, y) in [-10, 10] beside channels of RMS 1: about the ratio AssistantConfig(coords=6) has
        # beside the projector's raw channels (RMS about 0.6 a cell)
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, SIDE), torch.linspace(-1, 1, SIDE), indexing="ij")
        cells = torch.cat(
            [cells, torch.stack([xs, ys], -1).reshape(1, SIDE * SIDE, 2).expand(len(cells), -1, -1) * 10], 2
        )
    answers = sorted({q.answer for s in scenes for q in questions_for(s)})
    rows = torch.tensor([(i, QTYPES.index(q.qtype), COLORS.index(q.color), answers.index(q.answer))
                         for i, s in enumerate(scenes) for q in questions_for(s)])  # fmt: skip
    train, test = rows[rows[:, 0] < N_TRAIN], rows[rows[:, 0] >= N_TRAIN]
    torch.manual_seed(seed)
    model = Reader(cells.shape[2], len(answers), coords, places=places)
    steps = examples // 16
    opt = torch.optim.AdamW(model.parameters(), 1e-3, weight_decay=0.01)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, 1e-3, total_steps=steps, pct_start=0.05)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        b = train[torch.randint(len(train), (16,), generator=g)]
        loss = F.cross_entropy(model(cells[b[:, 0]], b[:, 1], b[:, 2]), b[:, 3])
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    with torch.no_grad():
        hit = (model.eval()(cells[test[:, 0]], test[:, 1], test[:, 2]).argmax(-1) == test[:, 3]).float()
    out = {t: float(hit[test[:, 1] == k].mean()) for k, t in enumerate(QTYPES)}
    out["non_relational"] = float(hit[test[:, 1] < 3].mean())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--reader", action="store_true", help="also the attention reader's learning curve")
    parser.add_argument("--regions", action="store_true", help="also the reader over region tokens")
    parser.add_argument("--examples", type=int, nargs="+", default=[8000, 16000, 32000])
    parser.add_argument("--region-examples", type=int, nargs="+", default=[2000, 4000, 8000])
    args = parser.parse_args()
    torch.set_num_threads(2)
    scenes = make_scenes(N_TRAIN + N_TEST, seed=1000)
    grids = pooled_grids([render_scene(s) for s in scenes], image_size=224, side=SIDE, progress=False)
    flat = StandardScaler().fit(grids.flatten(1)[:N_TRAIN].numpy()).transform(grids.flatten(1).numpy())
    for qtype in ("shape", "horizontal", "vertical"):
        accs = []
        for color in COLORS:
            y = np.array(
                [next(q.answer for q in questions_for(s) if q.qtype == qtype and q.color == color) for s in scenes]
            )
            clf = LogisticRegression(C=0.01, max_iter=300).fit(flat[:N_TRAIN], y[:N_TRAIN])
            accs.append(float((clf.predict(flat[N_TRAIN:]) == y[N_TRAIN:]).mean()))
        print(f"{qtype:10} {np.mean(accs):.3f} (per colour: {', '.join(f'{a:.2f}' for a in accs)}; 2 threads)")
    torch.set_num_threads(1)
    if args.regions:  # standardised on the training scenes' regions, padding rows left at 0, as the projector does
        regions = image_region_features([render_scene(s) for s in scenes], size=64, max_regions=10)
        present = regions[..., -1:]
        rows = regions[:N_TRAIN][present[:N_TRAIN, :, 0] > 0][:, :-1]
        regions = torch.cat([(regions[..., :-1] - rows.mean(0)) / rows.std(0) * present, present], -1)
        for n in args.region_examples:
            acc = reader_accuracy(regions, scenes, n, coords=False, places=False)
            print(f"reader, region tokens {n:>7,} examples: non-relational {acc['non_relational']:.3f} (shape "
                  f"{acc['shape']:.2f}, left/right {acc['horizontal']:.2f}, top/bottom {acc['vertical']:.2f}; "
                  f"1 thread)", flush=True)  # fmt: skip
    if not args.reader:
        return
    cells = grids.flatten(2).transpose(1, 2)  # (N, 16, 1280), standardised per channel on the training scenes
    mean, std = cells[:N_TRAIN].mean((0, 1)), cells[:N_TRAIN].std((0, 1)) + 1e-5
    cells = (cells - mean) / std
    for coords in (False, True):
        for n in args.examples:
            acc = reader_accuracy(cells, scenes, n, coords)
            print(f"reader, places {'as coordinates' if coords else 'learned':15} {n:>7,} examples: non-relational "
                  f"{acc['non_relational']:.3f} (shape {acc['shape']:.2f}, left/right {acc['horizontal']:.2f}, "
                  f"top/bottom {acc['vertical']:.2f}; 1 thread)", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
