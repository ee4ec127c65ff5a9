"""Embeddings at any magnification: a tile set's anchor tiles, embedded at every target mpp.

- :mod:`magflow.embed.protocol`: which tiles, and which window of which source patch makes each view
- :mod:`magflow.embed.encoder`: a run's exported teacher or an external timm model with local weights
- :mod:`magflow.embed.labels`: tile labels from label masks (phantom ground truth) or a tile-label CSV
- :mod:`magflow.embed.run`: batched inference and the embeddings file (:mod:`magflow.embed.output`)
"""

from magflow.embed.encoder import Encoder, ExternalModel, external_models, load_encoder, model_source
from magflow.embed.labels import read_label_mask, read_tile_label_csv, tile_labels
from magflow.embed.output import Embeddings, read_embeddings, write_embeddings
from magflow.embed.protocol import PROFILE_MPPS, min_source_px, plan_views, read_anchors
from magflow.embed.run import embed_tileset

__all__ = [
    "PROFILE_MPPS", "Embeddings", "Encoder", "ExternalModel", "embed_tileset", "external_models", "load_encoder",
    "min_source_px", "model_source", "plan_views", "read_anchors", "read_embeddings", "read_label_mask",
    "read_tile_label_csv", "tile_labels", "write_embeddings",
]
