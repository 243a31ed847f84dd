"""Baselines for image-text alignment: CCA on the same frozen features, and a bag-of-words text side."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from mmhelpers.contrastive import AlignData


def fit_cca(x: np.ndarray, y: np.ndarray, n_components: int, reg: float = 1e-3) -> tuple[np.ndarray, ...]:
    """Closed-form regularised CCA: (A, B, correlations) so that ``x @ A`` and ``y @ B`` are maximally correlated.

    Whiten each side with its (ridge-regularised) covariance, then take the SVD of the whitened cross
    covariance (Hotelling 1936). Same solution as scikit-learn's iterative ``CCA`` (a test checks the
    correlations), in one SVD instead of a power iteration per component.
    """
    x, y = x - x.mean(0), y - y.mean(0)
    n = len(x) - 1

    def inv_sqrt(c: np.ndarray) -> np.ndarray:
        w, v = np.linalg.eigh(c + reg * np.trace(c) / len(c) * np.eye(len(c)))
        return (v / np.sqrt(np.clip(w, 1e-12, None))) @ v.T

    wx, wy = inv_sqrt(x.T @ x / n), inv_sqrt(y.T @ y / n)
    u, s, vt = np.linalg.svd(wx @ (x.T @ y / n) @ wy)
    k = min(n_components, len(s))
    return wx @ u[:, :k], wy @ vt[:k].T, s[:k]


def cca_embeddings(
    train_images: np.ndarray, train_texts: np.ndarray, images: np.ndarray, texts: np.ndarray,
    n_components: int = 64, pca_dim: int = 128, seed: int = 0,
) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Fit CCA on training pairs (after standardising and PCA to ``pca_dim`` per side); project new images and texts.

    The classic pre-deep-learning recipe for Flickr8k retrieval (Hodosh et al. 2013; Gong et al. 2014):
    linear maps into a space where paired projections are maximally correlated. Each canonical
    dimension is weighted by its correlation, so retrieval by cosine leans on the reliable ones.
    """
    from sklearn.decomposition import PCA
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    pi = make_pipeline(StandardScaler(), PCA(min(pca_dim, *train_images.shape), random_state=seed)).fit(train_images)
    pt = make_pipeline(StandardScaler(), PCA(min(pca_dim, *train_texts.shape), random_state=seed)).fit(train_texts)
    ti, tt = pi.transform(train_images), pt.transform(train_texts)
    a, b, corr = fit_cca(ti, tt, n_components)
    zi = (pi.transform(images) - ti.mean(0)) @ a * corr
    zt = (pt.transform(texts) - tt.mean(0)) @ b * corr
    return torch.from_numpy(zi).float(), torch.from_numpy(zt).float()


def bag_of_words(train_texts: Sequence[str], texts: Sequence[str], max_features: int = 2000) -> torch.Tensor:
    """TF-IDF bag-of-words vectors (N, V) with a vocabulary fitted on ``train_texts`` only."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    vec = TfidfVectorizer(max_features=max_features, stop_words="english").fit(list(train_texts))
    return torch.from_numpy(vec.transform(list(texts)).toarray()).float()


def cca_retrieval(
    data: AlignData, train_images: Sequence[int] | torch.Tensor, test_images: Sequence[int] | torch.Tensor,
    n_components: int = 64,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
    """CCA between pooled image features and mean-pooled caption states of ``data``: fit on the training
    images' captions, return (test image embeddings, test caption embeddings, caption -> image position)."""
    mask = data.text_mask.unsqueeze(-1).float()
    text = (data.text_hidden.float() * mask).sum(1) / mask.sum(1).clamp(min=1.0)  # (C, D) mean pooling
    image = data.image_feats[:, 0].float()  # (I, D) centre-crop view
    rows_train, _ = data.captions_of(train_images)
    rows_test, local = data.captions_of(test_images)
    test = torch.as_tensor(test_images, dtype=torch.long)
    k = min(n_components, len(rows_train) // 8)  # a toy set has few pairs: keep the problem well posed
    zi, zt = cca_embeddings(image[data.caption_image[rows_train]].numpy(), text[rows_train].numpy(),
                            image[test].numpy(), text[rows_test].numpy(), n_components=k)  # fmt: skip
    return zi, zt, local
