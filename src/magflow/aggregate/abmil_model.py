"""The slide classifier: AB-MIL (Ilse et al., 2018) as the aggregation paper uses it, behind an optional
mixing encoder applied to each region.

## AB-MIL

A bag (a slide) is a set of instance features z_1..z_I; the model pools them with attention weights
and classifies the pooled vector. Two aggregator forms (``aggregate.abmil.aggregator``):

- ``paper-eq7`` (default): the paper's Eq. 7, the attention-weighted sum of the instance features
  themselves (the mixing encoder's outputs, or the tile embeddings of the baselines)::

      z = Σ_i a_i z_i

  with the attention of Eq. 8 (``attention: tanh``, Ilse et al.'s attention pooling)::

      a_i = exp(wᵀ tanh(V z_i)) / Σ_j exp(wᵀ tanh(V z_j)),   V: attn_dim × D, w: attn_dim

  ``attn_dim`` is the aggregator's hidden size (the paper's is 16). ``attention: gated`` takes Ilse
  et al.'s gated form instead, wᵀ(tanh(V z_i) ⊙ sigm(U z_i)).
- ``projection``: the instances first go through Linear(D → ``hidden_dim``), ReLU and dropout, and
  the projected vectors are pooled (an earlier magflow form; a named option, recorded as such).

The pooled vector goes through dropout and a linear classifier. Bags of different sizes are padded to
one B×I×D batch with a ``valid`` mask; padded instances get exactly zero weight, so padding never
changes a bag's output.

## The slide classifier

A slide classifier: an optional mixing encoder applied to each region, then AB-MIL over the slide.

What the instances of a slide's bag are depends on ``mode``:

- ``patch``: the contextualized region tokens, i.e. the encoder's patch outputs of every valid token
  of every region (a slide of R regions with n valid tokens each is a bag of R·n instances).
- ``cls``: the regions, each the concatenation of its ``n_cls`` class tokens (n_cls·width values),
  pooled as they are (the paper's Eq. 7; ``aggregator: projection`` compresses them first). Regions
  without a valid token are left out.
- ``tiles`` (no encoder; the baselines): the frozen tile embeddings themselves, the valid tokens of
  the scales in ``scales``. One scale gives "AB-MIL 10×" and so on. Several scales give "AB-MIL
  all×": the bag is the union of the tiles of all those scales (concatenated along the bag axis, each
  tile once, a coarse tile beside the finer tiles it contains), and a learned per-scale vector,
  initialised to zero, is added to each embedding so attention and classifier can tell scales apart.
  The baselines read the same region tokens as the mixer rows, so every row sees the same tiles.

With ``scales`` in the ``patch`` and ``cls`` modes (the one-magnification random-mixer rows, "Random
10×"), the encoder sees only the tokens of those scales: every other token of the region is marked not
valid (and zeroed) before the encoder, so attention never reaches it and it changes nothing; a region
with no token of those scales is left out (``cls``) or adds no instance (``patch``).

The encoder is frozen (run under ``no_grad``) while ``encoder_trainable`` is False.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import nullcontext
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn.utils.rnn import pad_sequence

from magflow.aggregate.bags import RegionBag
from magflow.aggregate.settings import ATTENTIONS
from magflow.errors import ConfigError, MagflowError


class ABMILOutput(NamedTuple):
    logits: Tensor     # B×C
    attention: Tensor  # B×I, sums to 1 over each bag's valid instances, 0 on padding


def _masked_softmax(scores: Tensor, valid: Tensor) -> Tensor:
    if not bool(valid.any(dim=1).all()):
        raise ValueError("every bag needs at least one valid instance (a slide with no tiles left?)")
    return torch.softmax(scores.masked_fill(~valid, float("-inf")), dim=1)


class TanhAttention(nn.Module):
    """Eq. 8: a_i = softmax_i(wᵀ tanh(V z_i)) over the valid instances of each bag (no biases)."""

    def __init__(self, in_dim: int, attn_dim: int = 16) -> None:
        super().__init__()
        self.V = nn.Linear(in_dim, attn_dim, bias=False)
        self.w = nn.Linear(attn_dim, 1, bias=False)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """Attention weights B×I for instances ``h`` B×I×D; every bag needs at least one valid instance."""
        return _masked_softmax(self.w(torch.tanh(self.V(h))).squeeze(-1), valid)


class GatedAttention(nn.Module):
    """a_i = softmax_i(wᵀ(tanh(V h_i) ⊙ sigm(U h_i))) over the valid instances of each bag.

    The sigmoid gate lets the attention score be non-linear in h beyond what tanh alone can express
    (Ilse et al., eq. 9).
    """

    def __init__(self, in_dim: int, attn_dim: int = 128, dropout: float = 0.0) -> None:
        super().__init__()
        self.tanh_branch = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Tanh(), nn.Dropout(dropout))
        self.sigmoid_branch = nn.Sequential(nn.Linear(in_dim, attn_dim), nn.Sigmoid(), nn.Dropout(dropout))
        self.score = nn.Linear(attn_dim, 1)

    def forward(self, h: Tensor, valid: Tensor) -> Tensor:
        """Attention weights B×I for instances ``h`` B×I×D; every bag needs at least one valid instance."""
        return _masked_softmax(self.score(self.tanh_branch(h) * self.sigmoid_branch(h)).squeeze(-1), valid)


class ABMIL(nn.Module):
    """Optional input projection (``hidden_dim``; None: Eq. 7, pool the inputs as they are), attention
    pooling, dropout, linear classifier."""

    def __init__(self, in_dim: int, n_classes: int, hidden_dim: int | None = None, attn_dim: int = 16,
                 dropout: float = 0.25, attention: str = "tanh") -> None:
        super().__init__()
        if n_classes < 2:
            raise ValueError(f"ABMIL needs at least 2 classes, got {n_classes}")
        if attention not in ATTENTIONS:
            raise ValueError(f"ABMIL attention {attention!r}: must be one of {ATTENTIONS}")
        width = hidden_dim or in_dim
        self.project = (nn.Sequential(nn.Linear(in_dim, width), nn.ReLU(), nn.Dropout(dropout))
                        if hidden_dim else nn.Identity())
        self.attention = (TanhAttention(width, attn_dim) if attention == "tanh"
                          else GatedAttention(width, attn_dim, dropout))
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(width, n_classes)

    def pool(self, x: Tensor, valid: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """The pooled vector B×D' (Eq. 7 when there is no projection) and the attention B×I."""
        if valid is None:
            valid = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
        h = self.project(x.masked_fill(~valid.unsqueeze(-1), 0.0))  # padding may hold anything, even NaN
        attention = self.attention(h, valid)
        return torch.einsum("bi,bid->bd", attention, h), attention

    def forward(self, x: Tensor, valid: Tensor | None = None) -> ABMILOutput:
        """Logits and attention for bags ``x`` B×I×D (``valid`` B×I bool; None: all instances are real)."""
        pooled, attention = self.pool(x, valid)
        return ABMILOutput(self.classifier(self.dropout(pooled)), attention)


MODES = ("patch", "cls", "tiles")
REGION_CHUNK = 256  # regions per encoder forward; bounds memory on slides with many regions


class SlideModel(nn.Module):
    def __init__(self, head: ABMIL, mode: str, encoder: nn.Module | None = None,
                 scales: Sequence[int] | None = None, token_dim: int | None = None) -> None:
        super().__init__()
        if mode not in MODES:
            raise ConfigError(f"abmil mode {mode!r}: must be one of {MODES}")
        if (encoder is None) != (mode == "tiles"):
            raise ConfigError(f"abmil mode {mode!r}: 'patch' and 'cls' need a mixing encoder, 'tiles' takes none")
        if scales is not None and not scales:
            raise ConfigError(f"abmil mode {mode!r}: scales is empty; give the scale ids to keep, or None for all")
        if mode == "tiles" and (not scales or token_dim is None):
            raise ConfigError("abmil mode 'tiles' needs the scale ids to pool (e.g. [1] or [0, 1, 2]) and token_dim")
        self.head, self.mode, self.encoder = head, mode, encoder
        self.scales = tuple(int(s) for s in scales) if scales else ()
        self.scale_embed = None
        if mode == "tiles" and len(self.scales) > 1:
            self.scale_embed = nn.Embedding(max(self.scales) + 1, int(token_dim))
            nn.init.zeros_(self.scale_embed.weight)

    @property
    def encoder_trainable(self) -> bool:
        return self.encoder is not None and any(p.requires_grad for p in self.encoder.parameters())

    def set_encoder_trainable(self, trainable: bool) -> None:
        if self.encoder is not None:
            self.encoder.requires_grad_(trainable)

    def instances(self, bag: RegionBag) -> Tensor:
        """The bag's instance features, I×D."""
        if self.mode == "tiles":
            keep = bag.valid & torch.isin(bag.scale_id, torch.tensor(self.scales, device=bag.scale_id.device))
            x = bag.tokens[keep]
            return x if self.scale_embed is None else x + self.scale_embed(bag.scale_id[keep])
        assert self.encoder is not None
        valid, tokens = bag.valid, bag.tokens
        if self.scales:  # a one-magnification mixer: the other scales' tokens are not there for it
            valid = valid & torch.isin(bag.scale_id, torch.tensor(self.scales, device=bag.scale_id.device))
            tokens = tokens.masked_fill(~valid.unsqueeze(-1), 0.0)
        with nullcontext() if self.encoder_trainable else torch.no_grad():
            outputs = [self.encoder(*(t[i:i + REGION_CHUNK] for t in (tokens, bag.scale_id, bag.position, valid)))
                       for i in range(0, tokens.shape[0], REGION_CHUNK)]
        if self.mode == "patch":
            return torch.cat([out.patches for out in outputs])[valid]
        regions = torch.cat([out.cls.flatten(1) for out in outputs])
        return regions[valid.any(dim=1)]

    def forward(self, bags: Sequence[RegionBag], ids: Sequence[str] | None = None) -> ABMILOutput:
        """Logits B×C and attention B×I_max (padded) for a batch of slides (``ids`` name them in errors)."""
        device = next(self.head.parameters()).device
        xs = [self.instances(bag.to(device)) for bag in bags]
        empty = [ids[i] if ids else f"#{i}" for i, x in enumerate(xs) if len(x) == 0]
        if empty:
            raise MagflowError(f"slide(s) {empty} have no valid tile of the pooled scales {self.scales or 'any'}; "
                               "drop them from the slide sheet of this task or pool other scales")
        valid = pad_sequence([torch.ones(len(x), dtype=torch.bool, device=device) for x in xs], batch_first=True)
        return self.head(pad_sequence(xs, batch_first=True), valid)


def build_slide_model(mode: str, n_classes: int, *, encoder: nn.Module | None = None,
                      token_dim: int | None = None, scales: Sequence[int] | None = None,
                      hidden_dim: int | None = None, attn_dim: int = 16, dropout: float = 0.25,
                      attention: str = "tanh") -> SlideModel:
    """A :class:`SlideModel` whose AB-MIL input width fits the mode (encoder width, n_cls·width or token_dim).

    ``hidden_dim`` None pools the instances themselves (Eq. 7); a number projects them to that width
    first (aggregator ``projection``). ``scales`` with a mixer: the scale ids the encoder sees (None: all).
    """
    if mode == "patch" and encoder is not None:
        in_dim = encoder.config.width
    elif mode == "cls" and encoder is not None:
        in_dim = encoder.config.n_cls * encoder.config.width
    elif mode == "tiles" and token_dim:
        in_dim = int(token_dim)
    else:
        raise ConfigError(f"abmil mode {mode!r}: 'patch' and 'cls' need a mixing encoder, 'tiles' needs token_dim")
    head = ABMIL(in_dim, n_classes, hidden_dim=hidden_dim, attn_dim=attn_dim, dropout=dropout, attention=attention)
    return SlideModel(head, mode, encoder=encoder, scales=scales, token_dim=token_dim)
