"""Baselines for image-text alignment: CCA on the same frozen features, and a bag-of-words text side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def cca_embeddings(
    train_images: np.ndarray, train_texts: np.ndarray, images: np.ndarray, texts: np.ndarray,
    n_components: int = 64, pca_dim: int = 128, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Fit CCA on training pairs (after PCA to ``pca_dim`` per side); project new images and texts.

    The classic pre-deep-learning recipe for Flickr8k retrieval (Hodosh et al. 2013; Gong et al. 2014):
    linear maps into a space where paired projections are maximally correlated.
    """
    from sklearn.cross_decomposition import CCA
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pi = make_pipeline(StandardScaler(), PCA(min(pca_dim, *train_images.shape), random_state=seed)).fit(train_images)
    pt = make_pipeline(StandardScaler(), PCA(min(pca_dim, *train_texts.shape), random_state=seed)).fit(train_texts)
    k = min(n_components, pi[-1].n_components_, pt[-1].n_components_)
    cca = CCA(n_components=k, max_iter=1000).fit(pi.transform(train_images), pt.transform(train_texts))
    zi, zt = cca.transform(pi.transform(images), pt.transform(texts))
    return torch.from_numpy(np.asarray(zi)).float(), torch.from_numpy(np.asarray(zt)).float()


def bag_of_words(train_texts: Sequence[str], texts: Sequence[str], max_features: int = 2000) -> torch.Tensor:
    """TF-IDF bag-of-words vectors (N, V) with a vocabulary fitted on ``train_texts`` only."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, stop_words="english").fit(list(train_texts))
    return torch.from_numpy(vec.transform(list(texts)).toarray()).float()
