"""The mixing encoder and MEM: masking, per-scale weights, the masked-only loss, a tiny run that learns."""

import numpy as np
import pytest
import torch

from magflow.aggregate.batch import RegionBatch
from magflow.aggregate.mem import MEM, gather_visible, mask_tokens, masked_cosine_loss, scale_weights
from magflow.aggregate.mixer import MixerConfig, MixingEncoder, layer_id
from magflow.aggregate.pretrain_mixer import MixerTrainConfig, train_mixer
from magflow.aggregate.regions import region_layout
from magflow.aggregate.synthetic import write_synthetic_regions
from magflow.errors import ConfigError

TINY = MixerConfig(in_dim=8, width=16, depth=2, heads=2, decoder_depth=1, decoder_width=16)


def random_batch(b: int = 4, dim: int = 8, seed: int = 0, absent: float = 0.3) -> RegionBatch:
    layout = region_layout(3, (1, 2, 4))
    g = torch.Generator().manual_seed(seed)
    valid = torch.rand(b, len(layout), generator=g) >= absent
    tokens = torch.randn(b, len(layout), dim, generator=g) * valid[..., None]

    def tile(values: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(values).long().expand(b, *values.shape).clone()

    return RegionBatch(tokens, valid, tile(layout.scale_id), tile(layout.position), tile(layout.cell), layout.side)


def test_mixer_shapes_ignore_invalid_tokens_and_name_layers():
    torch.manual_seed(0)
    encoder = MixingEncoder(TINY).eval()
    batch = random_batch()
    out = encoder(batch.tokens, batch.scale_id, batch.position, batch.valid)
    assert out.cls.shape == (4, 4, 16) and out.patches.shape == (4, 189, 16)
    assert not out.patches[~batch.valid].any()
    noisy = batch.tokens.masked_fill(~batch.valid[..., None], 1e3)
    again = encoder(noisy, batch.scale_id, batch.position, batch.valid)
    torch.testing.assert_close(again.cls, out.cls)
    torch.testing.assert_close(again.patches, out.patches)
    layers = {name: layer_id(name, TINY.depth) for name, _ in encoder.named_parameters()}
    assert layers["patch_embed.weight"] == layers["pos.pos_col"] == layers["cls_token"] == 0
    assert layers["blocks.0.attn.qkv.weight"] == 1 and layers["blocks.1.mlp.fc2.bias"] == 2
    assert layers["norm.weight"] == 3 == encoder.layer_id("encoder.norm.bias")
    with pytest.raises(ConfigError, match="max_grid"):
        encoder(batch.tokens, batch.scale_id, batch.position + TINY.max_grid, batch.valid)
    with pytest.raises(ConfigError, match="multiple of mixer.heads"):
        MixerConfig(in_dim=8, width=10, heads=4)


@pytest.mark.parametrize("ratio", [0.25, 0.5, 0.75])
def test_mask_takes_a_fixed_ratio_of_valid_tokens(ratio):
    batch = random_batch(b=16, seed=1)
    masked = mask_tokens(batch.valid, ratio, torch.Generator().manual_seed(0))
    assert not (masked & ~batch.valid).any()
    n = batch.valid.sum(1)
    assert (masked.sum(1) == torch.round(ratio * n.double()).long()).all()


def test_each_scale_gets_equal_expected_weight():
    """Averaged over many maskings, each scale's masked weight totals 1/L, though scales hold 9/36/144 tokens."""
    batch = random_batch(b=2, seed=3, absent=0.2)
    generator = torch.Generator().manual_seed(0)
    totals = torch.zeros(2, 3)
    draws = 4000
    for _ in range(draws):
        masked = mask_tokens(batch.valid, 0.25, generator)
        weights = scale_weights(masked, batch.valid, batch.scale_id, 3)
        totals += torch.zeros(2, 3).scatter_add_(1, batch.scale_id, weights)
    np.testing.assert_allclose((totals / draws).numpy(), np.full((2, 3), 1 / 3), rtol=0.03)
    # a region without one scale splits the weight between the scales it has
    valid = batch.valid.clone()
    valid[:, batch.scale_id[0] == 0] = False
    masked = mask_tokens(valid, 0.5, generator)
    weights = scale_weights(masked, valid, batch.scale_id, 3)
    assert weights[:, batch.scale_id[0] == 0].sum() == 0


def test_masked_loss_ignores_visible_tokens():
    batch = random_batch(b=3, seed=4)
    masked = mask_tokens(batch.valid, 0.5, torch.Generator().manual_seed(1))
    weights = scale_weights(masked, batch.valid, batch.scale_id, 3)
    prediction = torch.randn_like(batch.tokens, requires_grad=True)
    loss = masked_cosine_loss(prediction, batch.tokens, weights)
    visible = ~masked
    other_prediction = prediction.detach().clone()
    other_prediction[visible] = torch.randn(int(visible.sum()), 8)
    other_target = batch.tokens.clone()
    other_target[visible] = torch.randn(int(visible.sum()), 8)
    torch.testing.assert_close(masked_cosine_loss(other_prediction, other_target, weights), loss.detach())
    loss.backward()
    assert not prediction.grad[visible].any() and prediction.grad[masked].abs().sum() > 0
    # a perfect prediction gives −1 in expectation; with the per-region realised weights, exactly −Σw
    perfect = masked_cosine_loss(batch.tokens, batch.tokens, weights)
    torch.testing.assert_close(perfect, -weights.sum(1).mean())


def test_mem_encoder_never_sees_masked_tokens():
    torch.manual_seed(0)
    model = MEM(TINY).eval()
    batch = random_batch(b=3, seed=5)
    masked = mask_tokens(batch.valid, 0.5, torch.Generator().manual_seed(2))
    visible = gather_visible(batch.valid & ~masked)
    assert (visible.kept.sum(1) == (batch.valid & ~masked).sum(1)).all()
    first = model(batch, masked)
    changed = RegionBatch(batch.tokens.masked_fill(masked[..., None], 5.0), batch.valid, batch.scale_id,
                          batch.position, batch.cell, batch.side)
    torch.testing.assert_close(model(changed, masked).cls, first.cls)
    torch.testing.assert_close(first.per_scale.sum(), first.loss.detach())


def test_a_tiny_mem_run_learns(tmp_path, one_torch_thread):
    files = [tmp_path / f"r{i}.h5" for i in range(2)]
    for i, path in enumerate(files):
        write_synthetic_regions(path, f"s{i}", seed=i, dim=16)
    config = MixerTrainConfig(width=32, depth=2, heads=2, decoder_depth=1, decoder_width=32, batch_size=16,
                              iterations=40, warmup_iters=4, base_lr=3e-3, checkpoint_every=100)
    result = train_mixer(config, files, tmp_path / "run", progress=False, device="cpu")
    losses = [row["loss"] for row in result.history]
    assert np.mean(losses[-8:]) < np.mean(losses[:8]) - 0.05
    assert (tmp_path / "run" / "history.tsv").read_text().count("\n") == 41
    assert result.weights is not None and result.weights.is_file()
