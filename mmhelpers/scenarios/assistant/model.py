"""The assistant's model, as LLaVA and nanoVLM build it: frozen image grid -> few visual tokens -> MLP -> a pretrained LM.

    lm, tok = load_causal_lm()                       # SmolLM2-135M-Instruct (or tiny_llama in tests)
    model = Assistant(lm, feat_dim=1280, side=4)     # a 7x7 EfficientNet grid pooled to 4x4 = 16 visual tokens
    loss = model(**batch)                            # batch from chat.collate plus "grids" (B, 1280, 7, 7)

The projector's outputs replace the embeddings at the ``<image>`` placeholders, so the LM reads the image as 16
tokens inside its own chat template. The loss is next-token cross-entropy on the assistant's replies only, and the
vocabulary projection (49,152 columns for SmolLM2) is computed at those positions only: on a CPU that is most of
the saving. The LM stays frozen (stage 1 trains the projector alone); LoRA adapters (peft) or unfrozen top layers
can train with it in stage 2. Checkpoints hold what trains (``state_dict`` leaves the frozen LM out), so a run's
file is the projector's and adapters' size, not the LM's 517 MB.

``regions=K`` adds K visual tokens, one per colour region of a parameter-free segmentation
(:mod:`mmhelpers.regions`, as "bottom-up attention" VQA adds detector regions to a grid): each says where a region
is, its shape (spread) and its colour, through a second small MLP. The batch then carries ``"regions"`` (B, K, 8).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from mmhelpers.regions import REGION_FEATURES

from .chat import IGNORE

ATTENTION = ("causal", "prefix")  # nanoVLM and LLaVA: causal everywhere; PaliGemma: the image tokens see each other


def prefix_lm_mask(attention_mask: torch.Tensor, image_positions: torch.Tensor, dtype: torch.dtype | None = None
                   ) -> torch.Tensor:  # fmt: skip
    """The (B, 1, L, L) mask of a prefix LM: causal, except that the image tokens attend to each other both ways
    (PaliGemma's prefix, here the image alone); padded keys are masked, and a padded query sees itself only (a
    row that sees nothing would be NaN). Boolean (True = may attend), or additive in ``dtype`` (0 or the
    dtype's minimum) for attention code that adds it; transformers takes a 4D mask as it is."""
    B, L = attention_mask.shape
    device = attention_mask.device
    causal = torch.ones(L, L, dtype=torch.bool, device=device).tril()
    image = torch.zeros(B, L, dtype=torch.bool, device=device)
    image.scatter_(1, image_positions, True)
    allowed = (causal[None] | (image[:, :, None] & image[:, None, :])) & attention_mask[:, None, :].bool()
    allowed |= torch.eye(L, dtype=torch.bool, device=device)[None] & ~attention_mask[:, :, None].bool()
    if dtype is None:
        return allowed[:, None]
    return torch.zeros(B, 1, L, L, dtype=dtype, device=device).masked_fill(~allowed[:, None], torch.finfo(dtype).min)


class Projector(nn.Module):
    """Grid features (B, C, H, W) -> (B, side*side, d_model): adaptive average pooling, a two-layer MLP, and a learned
    embedding of each cell's place in the grid (a CNN's pooled channels say little about *where*; a ViT's patches
    carry their position embeddings, which is what LLaVA's and nanoVLM's projectors rely on)."""

    def __init__(self, feat_dim: int, d_model: int, side: int = 4, hidden: int | None = None, coords: float = 0.0,
                 regions: int = 0):  # fmt: skip
        super().__init__()
        self.side, self.n_regions = side, regions
        hidden = hidden or 2 * d_model
        self.mlp = nn.Sequential(
            nn.Linear(feat_dim + (2 if coords else 0), hidden), nn.GELU(), nn.Linear(hidden, d_model)
        )
        if regions:  # one more token per colour region (mmhelpers.regions): its place, shape and colour, standardised
            # with statistics of the training images' regions (init_region_scaling; saved with the weights)
            dim = len(REGION_FEATURES)
            self.region_mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, d_model))
            self.register_buffer("region_shift", torch.zeros(dim - 1))
            self.register_buffer("region_scale", torch.ones(dim - 1))
        self.cell = nn.Parameter(torch.zeros(side * side, d_model))  # starts at zero: the MLP's output alone
        # coords > 0: each cell's (x, y) in [-coords, coords] joins its channels at the MLP's input (CoordConv, and
        # the Relation Network's object coordinates), so a token says what is there *and* where in one vector
        ys, xs = torch.meshgrid(torch.linspace(-1, 1, side), torch.linspace(-1, 1, side), indexing="ij")
        self.register_buffer("xy", torch.stack([xs, ys]).mul(coords) if coords else torch.zeros(0, side, side),
                             persistent=False)  # fmt: skip

    @property
    def n_tokens(self) -> int:
        return self.side * self.side + self.n_regions

    @torch.no_grad()
    def init_region_scaling(self, regions: torch.Tensor) -> None:
        """Standardise the region features (all but the presence flag) with the mean and standard deviation of
        the regions present in ``regions`` (N, K, 8), the training images'."""
        rows = regions.reshape(-1, regions.shape[-1])
        rows = rows[rows[:, -1] > 0][:, :-1]
        if len(rows) < 2:
            raise ValueError(f"{len(rows)} regions in {len(regions)} images: too few to standardise the tokens")
        self.region_shift.copy_(rows.mean(0))
        self.region_scale.copy_(1.0 / rows.std(0).clamp_min(1e-3))

    def forward(self, grids: torch.Tensor, regions: torch.Tensor | None = None) -> torch.Tensor:
        """Grids (B, C, H, W) [and region features (B, K, 8)] -> (B, side*side [+ K], d_model)."""
        pooled = F.adaptive_avg_pool2d(grids, self.side)  # (B, C, side, side)
        if len(self.xy):
            pooled = torch.cat([pooled, self.xy.to(pooled.dtype).expand(len(pooled), -1, -1, -1)], dim=1)
        tokens = self.mlp(pooled.flatten(2).transpose(1, 2)) + self.cell  # (B, side*side, d_model)
        if not self.n_regions:
            return tokens
        if regions is None or regions.shape[1:] != (self.n_regions, len(REGION_FEATURES)):
            got = None if regions is None else tuple(regions.shape)
            raise ValueError(f"this projector reads {self.n_regions} regions an image, (B, {self.n_regions}, "
                             f"{len(REGION_FEATURES)}) from mmhelpers.regions.image_region_features; got {got}")  # fmt: skip
        present = regions[..., -1:]
        feats = (regions[..., :-1] - self.region_shift) * self.region_scale * present  # padding rows stay 0
        return torch.cat([tokens, self.region_mlp(torch.cat([feats, present], -1).to(tokens.dtype))], dim=1)


class Assistant(nn.Module):
    """A pretrained causal LM that reads ``side*side`` projected visual tokens at its ``<image>`` placeholders."""

    def __init__(self, lm: nn.Module, feat_dim: int, side: int = 4, freeze_lm: bool = True, attention: str = "causal",
                 coords: float = 0.0, regions: int = 0):  # fmt: skip
        super().__init__()
        if attention not in ATTENTION:
            raise ValueError(f"attention must be one of {ATTENTION}, got {attention!r}")
        self.lm = lm
        self.attention = attention
        self.projector = Projector(feat_dim, lm.config.hidden_size, side, coords=coords, regions=regions)
        if freeze_lm:
            lm.requires_grad_(False)

    @property
    def n_image_tokens(self) -> int:
        return self.projector.n_tokens

    def embed(self, input_ids: torch.Tensor, grids: torch.Tensor, image_positions: torch.Tensor,
              regions: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """Token embeddings with the visual tokens written in at ``image_positions`` (B, n_image_tokens).

        A batch without image tokens (text-only conversations, ``n_image_tokens=0``) is the LM's own embedding.
        """
        if image_positions.shape[1] == 0:
            return self.lm.get_input_embeddings()(input_ids)
        rows = torch.arange(len(input_ids), device=input_ids.device)[:, None].expand_as(image_positions)
        # the <image> id may lie past the LM's table (the tokenizer grew by one, the frozen LM did not): look up
        # any real token there instead; those rows are overwritten anyway
        ids = input_ids.index_put((rows, image_positions), torch.zeros_like(image_positions))
        emb = self.lm.get_input_embeddings()(ids)
        visual = self.projector(grids.to(emb.dtype), regions)
        return emb.index_put((rows, image_positions), visual.to(emb.dtype))  # autocast may hand back bf16

    def lm_mask(self, attention_mask: torch.Tensor, image_positions: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """What the LM gets as ``attention_mask``: the 2D padding mask (causal), or the 4D prefix-LM mask."""
        if self.attention == "causal" or image_positions.shape[1] == 0:
            return attention_mask
        sdpa = getattr(self.lm.config, "_attn_implementation", "eager") == "sdpa"  # takes booleans in any precision
        return prefix_lm_mask(attention_mask, image_positions, None if sdpa else dtype)

    def hidden(self, input_ids, attention_mask, grids, image_positions, position_ids=None, regions=None
               ) -> torch.Tensor:  # fmt: skip
        """The LM's last hidden states (B, L, d_model) for a batch with images."""
        embeds = self.embed(input_ids, grids, image_positions, regions)
        mask = self.lm_mask(attention_mask, image_positions, embeds.dtype)
        return self.lm.model(inputs_embeds=embeds, attention_mask=mask, position_ids=position_ids).last_hidden_state

    def forward(self, input_ids, attention_mask, grids, image_positions, labels, regions=None) -> torch.Tensor:
        """Mean next-token cross-entropy over the assistant's reply tokens (positions whose label is not IGNORE)."""
        h = self.hidden(input_ids, attention_mask, grids, image_positions, regions=regions)
        targets = labels[:, 1:]
        keep = targets != IGNORE  # position t predicts token t+1
        logits = self.lm.lm_head(h[:, :-1][keep])  # (n_reply_tokens, vocab): the vocabulary only where it is scored
        return F.cross_entropy(logits.float(), targets[keep])

    # checkpoints: what trains, not the frozen LM
    def _frozen_keys(self) -> set[str]:
        named = self.lm.named_parameters(remove_duplicate=False)  # tied weights (lm_head = embeddings) under both names
        return {f"lm.{name}" for name, p in named if not p.requires_grad}

    def state_dict(self, *args, **kwargs):
        state = super().state_dict(*args, **kwargs)
        frozen = self._frozen_keys()
        prefix = kwargs.get("prefix", "")
        return type(state)((k, v) for k, v in state.items() if k.removeprefix(prefix) not in frozen)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        result = super().load_state_dict(state_dict, strict=False, assign=assign)
        missing = set(result.missing_keys) - self._frozen_keys()
        if strict and (missing or result.unexpected_keys):
            raise RuntimeError(
                f"Assistant checkpoint: missing {sorted(missing)[:5]}, unexpected {result.unexpected_keys[:5]}"
            )
        return result

    def trainable_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters() if p.requires_grad)
