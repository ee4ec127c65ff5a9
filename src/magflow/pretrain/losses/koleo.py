"""The KoLeo regulariser: −mean log distance of each feature to its nearest neighbour in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8  # in the L2 normalisation, added to the difference vectors and inside the log, as in DINOv2


@torch.no_grad()
def nearest_neighbours(x: torch.Tensor) -> torch.Tensor:
    """For n×d unit rows, the index of each row's largest inner product with another row."""
    dots = x @ x.t()
    dots.fill_diagonal_(-1.0)  # a row is never its own neighbour (cosines are ≥ −1)
    return dots.argmax(dim=1)


def koleo_loss(features: torch.Tensor) -> torch.Tensor:
    """KoLeo of n×d features, or the sum over crops of a G×n×d stack (DINOv2 sums over the global crops).

    Features are L2-normalised; each one's neighbour is the other row with the largest inner product,
    and the loss is −mean log(‖x − x_nn + ε‖ + ε), with ε added to every component of the difference
    as ``torch.nn.PairwiseDistance`` does. Identical rows are at distance ε·√d, not 0. Float64 stays
    float64; other dtypes are computed in float32.
    """
    if features.ndim == 3:
        return sum((koleo_loss(crop) for crop in features), features.new_zeros(()))
    with torch.autocast(features.device.type, enabled=False):
        x = F.normalize(features if features.dtype == torch.float64 else features.float(), dim=-1, eps=EPS)
        distances = F.pairwise_distance(x, x[nearest_neighbours(x)], p=2.0, eps=EPS)
        return -torch.log(distances + EPS).mean()
