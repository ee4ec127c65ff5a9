"""DINOv2 pretraining building blocks: backbone, head, teacher targets, losses, masking, schedules, optimiser groups."""

from magflow.lazy import lazy_namespace

__all__ = lazy_namespace(__name__, {
    "backbone": ["Backbone", "BackboneOutput", "build_backbone"],
    "ema": ["update_teacher"],
    "head": ["DINOHead"],
    "losses": ["dino_loss", "ibot_loss", "koleo_loss"],
    "masking": ["MaskBatch", "block_mask", "mask_global_crops", "sample_blocks"],
    "param_groups": ["apply_schedules", "backbone_lr_multiplier", "build_param_groups"],
    "schedules": ["CosineSchedule", "Schedules", "build_schedules", "last_layer_lr_schedule", "teacher_temp_schedule"],
    "targets": ["Center", "sinkhorn_knopp"],
})
