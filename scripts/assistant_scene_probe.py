"""Do the assistant's frozen visual tokens hold the Sort-of-CLEVR answers? A linear probe per colour.

    python scripts/assistant_scene_probe.py        # about a minute on 2 cores once the grids are cached

For each colour and non-relational question type, a logistic regression on the pooled 4x4 EfficientNet-Lite0
grid (the 16 visual tokens the assistant sees, 224 px) of 800 training scenes, scored on 200 test scenes (the
assistant's scene generator seed, 1000). The README quotes its output beside the assistant's accuracy.
"""

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

from mmhelpers.data.sort_of_clevr import COLORS, make_scenes, questions_for, render_scene
from mmhelpers.image_grids import pooled_grids

torch.set_num_threads(2)
N_TRAIN, N_TEST = 800, 200
scenes = make_scenes(N_TRAIN + N_TEST, seed=1000)
grids = pooled_grids([render_scene(s) for s in scenes], image_size=224, side=4, progress=False).flatten(1).numpy()
grids = StandardScaler().fit(grids[:N_TRAIN]).transform(grids)
for qtype in ("shape", "horizontal", "vertical"):
    accs = []
    for color in COLORS:
        y = np.array(
            [next(q.answer for q in questions_for(s) if q.qtype == qtype and q.color == color) for s in scenes]
        )
        clf = LogisticRegression(C=0.01, max_iter=300).fit(grids[:N_TRAIN], y[:N_TRAIN])
        accs.append(float((clf.predict(grids[N_TRAIN:]) == y[N_TRAIN:]).mean()))
    print(f"{qtype:10} {np.mean(accs):.3f} (per colour: {', '.join(f'{a:.2f}' for a in accs)}; 2 threads)")
