"""The DINOv2 losses, hand-written to match the paper: DINO (CLS), iBOT (masked patches), KoLeo."""

from magflow.pretrain.losses.dino import dino_loss
from magflow.pretrain.losses.ibot import ibot_loss
from magflow.pretrain.losses.koleo import koleo_loss

__all__ = ["dino_loss", "ibot_loss", "koleo_loss"]
