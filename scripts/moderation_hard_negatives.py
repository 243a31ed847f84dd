"""How separable are the moderation scenario's hard negatives? An oracle that knows the photo's content.

For every test post, the oracle compares the post's text with the photo's three captions that no post uses
(captions 3 to 5; the posts use the first two) and flags the post when the best MiniLM cosine is low. It reads
no pixels, so it is not a model the scenario could build; it says how far a perfect describer of the photo,
judging by sentence similarity, gets on each set, i.e. how much of the hard set is decidable at all when the
flagged text is the caption of the most similar photo.

    MMHELPERS_MIRROR=../shared/data .venv/bin/python scripts/moderation_hard_negatives.py
"""

from __future__ import annotations

import torch
from sklearn.metrics import roc_auc_score

from mmhelpers.classify import text_features
from mmhelpers.scenarios.moderation.data import load_posts
from mmhelpers.utils import set_threads


def main() -> None:
    set_threads(2)
    pd = load_posts("real", seed=0, progress=False)
    unused = [caps[2:] for caps in pd.captions]  # the captions no post carries
    flat = [c for caps in unused for c in caps]
    owner = torch.tensor([i for i, caps in enumerate(unused) for _ in caps])
    emb = text_features(flat, progress=False)
    texts = text_features(pd.texts, progress=False)
    best = torch.full((len(pd),), -1.0)
    groups = torch.as_tensor(pd.groups)
    for row in range(len(flat)):
        mine = groups == owner[row]
        best[mine] = torch.maximum(best[mine], texts[mine] @ emb[row])
    for split in ("val", "test"):
        for name, idx in pd.index[split].items():
            auroc = roc_auc_score(pd.labels[idx], (-best[idx]).numpy())
            print(f"{split:4} {name:6} oracle AUROC {auroc:.3f} ({len(idx)} posts)")


if __name__ == "__main__":
    main()
