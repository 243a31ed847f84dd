"""Value checks of mmhelpers.generate: filtering by hand, cache equivalence, greedy/sample/beam agreement, EOS."""

from __future__ import annotations

import math

import pytest
import torch

from mmhelpers.generate import _beam_search, filter_logits, generate, time_generation
from mmhelpers.vlm import FUSIONS, MiniVLM, VLMConfig

pytestmark = pytest.mark.usefixtures("one_thread")

B, N, D_VISUAL, NEW = 4, 5, 6, 8
INF = float("inf")


def _model(fusion: str = "prefix", seed: int = 0, **kw) -> MiniVLM:
    """A tiny model with large random weights, so that its generations vary with the prompt and the image."""
    torch.manual_seed(seed)
    cfg = dict(vocab_size=13, block_size=12, n_layer=2, n_head=2, n_embd=16, dropout=0.0, fusion=fusion)
    cfg |= dict(d_visual=D_VISUAL, n_visual=N, gated_cross=False)
    m = MiniVLM(VLMConfig(**(cfg | kw)))
    with torch.no_grad():
        for p in m.parameters():
            if p.dim() >= 2:  # at the N(0, 0.02) init a fresh model repeats one token whatever it sees
                p.normal_(0.0, 0.3)
    return m


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """(visual (B, N, d_visual), prompt (B, 2) = BOS + one question token)."""
    g = torch.Generator().manual_seed(seed)
    prompt = torch.stack([torch.ones(B, dtype=torch.long), torch.randint(3, 13, (B,), generator=g)], dim=1)
    return torch.randn(B, N, D_VISUAL, generator=g), prompt


# --------------------------------------------------------------------------- filter_logits


def test_filter_logits_top_k_by_hand():
    logits = torch.tensor([[1.0, 3.0, 2.0, 0.0], [0.0, 2.0, 2.0, 5.0]])
    assert torch.equal(filter_logits(logits, top_k=2), torch.tensor([[-INF, 3.0, 2.0, -INF], [-INF, 2.0, 2.0, 5.0]]))
    assert torch.equal(filter_logits(logits, top_k=4), logits)
    assert torch.equal(filter_logits(logits), logits)


def test_filter_logits_top_p_by_hand():
    probs = torch.tensor([0.15, 0.5, 0.05, 0.3])  # sorted: 0.5, 0.3, 0.15, 0.05; cumulative 0.5, 0.8, 0.95, 1
    logits = probs.log()[None]
    kept = {p: torch.isfinite(filter_logits(logits, top_p=p))[0].tolist() for p in (0.4, 0.5, 0.7, 0.9, 0.99, 1.0)}
    assert kept[0.4] == [False, True, False, False]  # the top token alone already has 0.5 >= 0.4
    assert kept[0.5] == [False, True, False, False]
    assert kept[0.7] == [False, True, False, True]  # 0.5 + 0.3 = 0.8 >= 0.7
    assert kept[0.9] == [True, True, False, True]
    assert kept[0.99] == [True, True, True, True]
    assert kept[1.0] == [True, True, True, True]
    out = filter_logits(logits, top_p=0.7)
    assert torch.equal(out[torch.isfinite(out)], logits[0, [1, 3]])  # kept logits are untouched
    both = filter_logits(logits, top_k=3, top_p=0.99)  # top-k first, then the nucleus of what is left
    assert torch.isfinite(both)[0].tolist() == [True, True, False, True]


# --------------------------------------------------------------------------- cache and strategies


@pytest.mark.parametrize("fusion", FUSIONS)
def test_cached_generation_equals_uncached(fusion):
    m, (vis, prompt) = _model(fusion), _inputs()
    for visual in (vis, None):
        for strategy in ("greedy", "beam"):
            cached = generate(m, visual, prompt, NEW, strategy=strategy, eos_id=-1)
            uncached = generate(m, visual, prompt, NEW, strategy=strategy, eos_id=-1, use_cache=False)
            assert cached.shape == (B, 2 + NEW)
            assert torch.equal(cached, uncached)
            assert torch.equal(cached[:, :2], prompt)
    with_image, without = generate(m, vis, prompt, NEW, eos_id=-1), generate(m, None, prompt, NEW, eos_id=-1)
    assert not torch.equal(with_image, without)


@pytest.mark.parametrize("fusion", FUSIONS)
def test_strategies_that_must_equal_greedy(fusion):
    m, (vis, prompt) = _model(fusion), _inputs()
    greedy = generate(m, vis, prompt, NEW, eos_id=-1)
    g = torch.Generator().manual_seed(0)
    assert torch.equal(generate(m, vis, prompt, NEW, strategy="beam", num_beams=1, eos_id=-1), greedy)
    assert torch.equal(generate(m, vis, prompt, NEW, strategy="sample", top_k=1, eos_id=-1, generator=g), greedy)
    assert torch.equal(
        generate(m, vis, prompt, NEW, strategy="sample", temperature=1e-4, eos_id=-1, generator=g), greedy
    )
    assert torch.equal(generate(m, vis, prompt, NEW, strategy="sample", temperature=0.0, eos_id=-1), greedy)
    assert torch.equal(generate(m, vis, prompt, NEW, strategy="sample", top_p=1e-6, eos_id=-1, generator=g), greedy)


def test_seeded_sampling_is_reproducible():
    m, (vis, prompt) = _model(), _inputs()

    def sample(seed: int, use_cache: bool = True) -> torch.Tensor:
        g = torch.Generator().manual_seed(seed)
        return generate(m, vis, prompt, NEW, "sample", temperature=3.0, use_cache=use_cache, eos_id=-1, generator=g)

    first = sample(7)
    assert torch.equal(first, sample(7))
    assert torch.equal(first, sample(7, use_cache=False))
    assert not torch.equal(first, sample(8))
    assert not torch.equal(first, generate(m, vis, prompt, NEW, eos_id=-1))  # hot sampling is not greedy


def test_eos_stops_and_pads():
    m, (vis, prompt) = _model(), _inputs()
    free = generate(m, vis, prompt, NEW, eos_id=-1)  # never stops

    def ends(eos: int) -> list[int]:
        """Per row, the length up to and including the first EOS in the free run (all of it without one)."""
        hits = [(row[2:] == eos).nonzero() for row in free]
        return [2 + int(h[0]) + 1 if len(h) else free.shape[1] for h in hits]

    # EOS = the token that lets every row stop soonest: rows pad after their EOS and generation ends early
    eos = min(set(free[:, 2:].flatten().tolist()), key=lambda tok: max(ends(tok)))
    assert max(ends(eos)) < 2 + NEW
    out = generate(m, vis, prompt, NEW, eos_id=eos)
    assert out.shape == (B, max(ends(eos)))
    for row_free, row, end in zip(free, out, ends(eos), strict=True):
        assert torch.equal(row[:end], row_free[:end])
        assert bool((row[end:] == m.cfg.pad_id).all())
    assert generate(m, vis, prompt, NEW).shape[1] <= 2 + NEW  # the default EOS is the config's


def test_model_mode_is_restored_and_dropout_is_off():
    m, (vis, prompt) = _model(dropout=0.5), _inputs()
    m.eval()
    reference = generate(m, vis, prompt, NEW, eos_id=-1)
    m.train()
    assert torch.equal(generate(m, vis, prompt, NEW, eos_id=-1), reference)
    assert m.training
    with torch.enable_grad():
        assert not generate(m, vis, prompt, 2).requires_grad


def test_bad_arguments():
    m, (vis, prompt) = _model(), _inputs()
    with pytest.raises(ValueError):
        generate(m, vis, prompt, 3, strategy="nucleus")
    with pytest.raises(ValueError):
        generate(m, vis, prompt, 12)  # 2 prompt tokens + 11 fed back > block_size 12


BAD_ARGUMENTS = [
    (dict(max_new_tokens=-1), r"max_new_tokens must be an int >= 0, got -1"),
    (dict(max_new_tokens=2.5), r"max_new_tokens must be an int >= 0, got 2\.5"),
    (dict(temperature=-0.5), r"temperature must be a finite number >= 0 \(0 means greedy.*got -0\.5"),
    (dict(temperature=float("nan")), r"temperature must be a finite number >= 0 .*got nan"),
    (dict(top_p=1.5), r"top_p must be None \(no nucleus\) or in \(0, 1\], got 1\.5"),
    (dict(top_p=0.0), r"top_p must be None .*got 0\.0"),
    (dict(top_p=-0.1), r"top_p must be None .*got -0\.1"),
    (dict(top_k=0), r"top_k must be None \(no limit\) or an int >= 1, got 0"),
    (dict(top_k=-3), r"top_k must be None .*got -3"),
]


@pytest.mark.parametrize(
    "kw, pattern", BAD_ARGUMENTS, ids=[",".join(f"{k}={v}" for k, v in kw.items()) for kw, _ in BAD_ARGUMENTS]
)
@pytest.mark.parametrize("strategy", ["sample", "greedy"])
def test_bad_sampling_arguments_are_rejected_up_front(kw, pattern, strategy):
    m, (vis, prompt) = _model(), _inputs()
    args = {"max_new_tokens": 3, "strategy": strategy, "eos_id": -1} | kw
    with pytest.raises(ValueError, match=pattern):
        generate(m, vis, prompt, **args)


def test_edge_values_that_stay_allowed():
    m, (vis, prompt) = _model(), _inputs()
    assert torch.equal(generate(m, vis, prompt, 0), prompt)  # no new tokens: the prompt back
    g = torch.Generator().manual_seed(0)
    out = generate(m, vis, prompt, 3, "sample", top_p=1.0, top_k=1, eos_id=-1, generator=g)
    assert torch.equal(out, generate(m, vis, prompt, 3, eos_id=-1))  # top_k=1 is greedy, top_p=1 no nucleus


def test_filter_logits_rejects_bad_filters():
    logits = torch.zeros(1, 4)
    with pytest.raises(ValueError, match="top_k must be"):
        filter_logits(logits, top_k=0)
    with pytest.raises(ValueError, match="top_p must be"):
        filter_logits(logits, top_p=0.0)


# --------------------------------------------------------------------------- beam search by hand


class _TableLM:
    """Next-token distribution that depends only on the last token (pad 0, BOS 1, EOS 2, A 3, B 4)."""

    TABLE = {1: {3: 0.55, 4: 0.45}, 3: {3: 0.34, 4: 0.33, 2: 0.33}, 4: {2: 0.95, 3: 0.05}, 2: {0: 1.0}, 0: {0: 1.0}}

    def __call__(self, seqs: torch.Tensor) -> torch.Tensor:
        logits = torch.full((seqs.shape[0], 5), -1e9)
        for i, last in enumerate(seqs[:, -1].tolist()):
            for tok, p in self.TABLE[last].items():
                logits[i, tok] = math.log(p)
        return logits

    def reorder(self, index: torch.Tensor) -> None:
        pass


def test_beam_search_by_hand():
    prompt = torch.tensor([[1]])
    # greedy: BOS A A (mean log-prob (ln .55 + ln .34) / 2 = -0.84); the beam finds BOS B EOS ((ln .45 + ln .95) / 2 = -0.43)
    assert _beam_search(_TableLM(), prompt, 2, num_beams=1, eos_id=2, pad_id=0).tolist() == [[1, 3, 3]]
    assert _beam_search(_TableLM(), prompt, 2, num_beams=2, eos_id=2, pad_id=0).tolist() == [[1, 4, 2]]
    # longer: BOS B EOS pad keeps its mean over 2 tokens (-0.43); the surviving 3-token path A A A has -0.92
    assert _beam_search(_TableLM(), prompt, 3, num_beams=2, eos_id=2, pad_id=0).tolist() == [[1, 4, 2, 0]]


# --------------------------------------------------------------------------- timing


def test_time_generation_reports_identical_outputs():
    m, (vis, prompt) = _model(), _inputs()
    report = time_generation(m, vis, prompt, 6, repeats=1)
    assert set(report) == {
        "cached_s", "uncached_s", "speedup", "cached_positions", "uncached_positions", "work_ratio", "identical"
    }  # fmt: skip
    assert report["identical"] is True
    assert report["cached_s"] > 0 and report["uncached_s"] > 0
    assert report["speedup"] == pytest.approx(report["uncached_s"] / report["cached_s"])


@pytest.mark.parametrize("fusion", ["prefix", "cross"])
def test_time_generation_counts_the_positions_the_cache_saves(fusion: str):
    """Cached: the prefix once, the prompt once, then one position a step. Uncached: everything, every step."""
    m, (vis, prompt) = _model(fusion), _inputs()
    n, t0 = 6, prompt.shape[1]
    prefix = N if fusion == "prefix" else 0  # cross fusion keeps the visual tokens out of the sequence
    report = time_generation(m, vis, prompt, n, repeats=2)
    assert report["cached_positions"] == B * (prefix + t0 + n - 1)
    assert report["uncached_positions"] == B * sum(prefix + t0 + k for k in range(n))
    assert report["work_ratio"] == report["uncached_positions"] / report["cached_positions"]
    assert not m.blocks[0]._forward_hooks  # the counting hook is removed
