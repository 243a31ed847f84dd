"""Retrieval metrics against hand-computed cases."""

from __future__ import annotations

import pytest
import torch

from mmhelpers.retrieval import ranks_of_targets, recall_summary, retrieval_metrics, top_matches


def test_ranks_hand_computed():
    sim = torch.tensor([[0.9, 0.1, 0.5], [0.2, 0.3, 0.8], [0.7, 0.6, 0.1]])
    relevant = torch.eye(3, dtype=torch.bool)
    # query 0: its item scores 0.9, the best -> 1; query 1: 0.3 < 0.8 -> 2; query 2: 0.1 is last -> 3
    assert ranks_of_targets(sim, relevant).tolist() == [1, 2, 3]


def test_best_of_several_relevant_items_counts():
    sim = torch.tensor([[0.1, 0.9, 0.5, 0.7]])
    relevant = torch.tensor([[True, False, True, False]])  # relevant items score 0.1 and 0.5; 0.9 and 0.7 beat 0.5
    assert ranks_of_targets(sim, relevant).tolist() == [3]


def test_ties_count_against_the_query():
    sim = torch.zeros(4, 4)  # a model that outputs constants
    ranks = ranks_of_targets(sim, torch.eye(4, dtype=torch.bool))
    assert ranks.tolist() == [4, 4, 4, 4]


def test_recall_summary_values():
    s = recall_summary(torch.tensor([1, 2, 6, 11, 3]))
    assert s == {"R@1": 0.2, "R@5": 0.6, "R@10": 0.8, "median_rank": 3.0}


def test_retrieval_metrics_both_directions_hand_computed():
    # 2 images, 4 captions (2 each); 2-d embeddings so every similarity is easy to read off.
    images = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    texts = torch.tensor([[1.0, 0.1], [0.1, 1.0], [0.0, 1.0], [1.0, 0.0]])
    caption_image = [0, 0, 1, 1]
    m = retrieval_metrics(texts, images, caption_image)
    # t2i: caption 0 -> image 0 (rank 1), caption 1 -> image 1 first, so image 0 rank 2, caption 2 rank 1,
    # caption 3 -> image 0 first, image 1 rank 2
    assert m["t2i"] == {"R@1": 0.5, "R@5": 1.0, "R@10": 1.0, "median_rank": 1.5}
    # i2t: image 0's best caption is caption 0 or 3 (3 is image 1's, ties at cos 1.0 vs 0.995): caption 3 has
    # cos 1.0, caption 0 cos 0.995 -> rank 2; image 1: caption 2 (cos 1.0) is its own -> rank 1
    assert m["i2t"]["R@1"] == 0.5 and m["i2t"]["median_rank"] == 1.5


def test_perfect_and_random_embeddings():
    g = torch.Generator().manual_seed(0)
    images = torch.randn(100, 32, generator=g)
    caption_image = torch.arange(100).repeat_interleave(5)
    perfect = retrieval_metrics(images[caption_image] + 0.01 * torch.randn(500, 32, generator=g), images, caption_image)
    assert perfect["t2i"]["R@1"] == 1.0 and perfect["i2t"]["median_rank"] == 1.0
    rand = retrieval_metrics(torch.randn(500, 32, generator=g), images, caption_image)
    assert rand["t2i"]["R@5"] < 0.12  # chance is 5/100
    assert rand["t2i"]["median_rank"] > 25


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="caption embeddings"):
        retrieval_metrics(torch.randn(3, 4), torch.randn(2, 4), [0, 1])
    with pytest.raises(ValueError, match="index the 2 images"):
        retrieval_metrics(torch.randn(2, 4), torch.randn(2, 4), [0, 5])
    with pytest.raises(ValueError, match="at least one relevant"):
        ranks_of_targets(torch.zeros(2, 2), torch.zeros(2, 2, dtype=torch.bool))


def test_top_matches_order():
    sim = torch.tensor([[0.1, 0.9, 0.5]])
    assert top_matches(sim, k=2).tolist() == [[1, 2]]
