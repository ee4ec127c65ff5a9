"""Embeddings at any magnification: a tile set"s anchor tiles, embedded at every target mpp.

- :mod:`magflow.embed.protocol`: which tiles, and which window of which source patch makes each view
- :mod:`magflow.embed.encoder`: a run"s exported teacher or an external timm model with local weights
- :mod:`magflow.embed.control`: a run"s network at initialisation (its control), rebuilt from its model card
- :mod:`magflow.embed.labels`: tile labels from label masks (phantom ground truth) or a tile-label CSV
- :mod:`magflow.embed.embed`: batched inference and the embeddings file (:mod:`magflow.embed.output`)
"""

from magflow.lazy import lazy_namespace

__all__ = lazy_namespace(__name__, {
    "control": ["CONTROL_SUFFIX", "InitControl", "control_name", "control_of"],
    "encoder": ["Encoder", "load_encoder"],
    "external": ["ExternalModel", "external_models", "model_source"],
    "labels": ["read_label_mask", "read_tile_label_csv", "tile_labels"],
    "output": ["Embeddings", "read_embeddings", "write_embeddings"],
    "protocol": ["PROFILE_MPPS", "RESAMPLE_MODES", "min_source_px", "plan_views", "read_anchors"],
    "embed": ["embed_tileset"],
})
