"""DINOv2 pretraining building blocks: backbone, head, teacher targets, losses, masking, schedules, optimiser groups."""

from magflow.pretrain.backbone import Backbone, BackboneOutput, build_backbone
from magflow.pretrain.ema import update_teacher
from magflow.pretrain.head import DINOHead
from magflow.pretrain.losses import dino_loss, ibot_loss, koleo_loss
from magflow.pretrain.masking import MaskBatch, block_mask, mask_global_crops, sample_blocks
from magflow.pretrain.param_groups import apply_schedules, backbone_lr_multiplier, build_param_groups
from magflow.pretrain.schedules import (CosineSchedule, Schedules, build_schedules, last_layer_lr_schedule,
                                        teacher_temp_schedule)
from magflow.pretrain.targets import Center, sinkhorn_knopp

__all__ = [
    "Backbone", "BackboneOutput", "build_backbone", "DINOHead", "update_teacher",
    "dino_loss", "ibot_loss", "koleo_loss",
    "MaskBatch", "block_mask", "mask_global_crops", "sample_blocks",
    "apply_schedules", "backbone_lr_multiplier", "build_param_groups",
    "CosineSchedule", "Schedules", "build_schedules", "last_layer_lr_schedule", "teacher_temp_schedule",
    "Center", "sinkhorn_knopp",
]
