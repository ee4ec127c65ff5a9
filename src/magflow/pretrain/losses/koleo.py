"""The KoLeo regulariser: −mean log distance of each feature to its nearest neighbour in the batch."""

from __future__ import annotations

import torch
import torch.nn.functional as F

EPS = 1e-8  # inside the log, and for the L2 normalisation


def koleo_loss(features: torch.Tensor) -> torch.Tensor:
    """KoLeo of n×d features, or the sum over crops of a G×n×d stack (DINOv2 sums over the global crops).

    Features are L2-normalised; each one's neighbour is the other row with the largest inner product,
    and the loss is −mean log(‖x − x_nn‖ + ε). Identical rows are at distance 0 and give −log ε.
    """
    if features.ndim == 3:
        return sum((koleo_loss(crop) for crop in features), features.new_zeros(()))
    with torch.autocast(features.device.type, enabled=False):
        x = F.normalize(features.float(), dim=-1, eps=EPS)
        with torch.no_grad():
            dots = x @ x.t()
            dots.fill_diagonal_(-1.0)  # a row is never its own neighbour (cosines are ≥ −1)
            neighbours = dots.argmax(dim=1)
        distances = torch.linalg.vector_norm(x - x[neighbours], dim=-1)
        return -torch.log(distances + EPS).mean()
