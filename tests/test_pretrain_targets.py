"""Teacher targets: Sinkhorn-Knopp marginals, and which batches the EMA centre has seen at each step."""

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from magflow.pretrain import Center, sinkhorn_knopp


def _softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def test_sinkhorn_rows_are_distributions_and_prototypes_near_equally_used():
    logits = torch.tanh(torch.randn(12, 5, generator=torch.Generator().manual_seed(0)))
    targets = sinkhorn_knopp(logits, temp=0.05)
    np.testing.assert_allclose(targets.sum(dim=1).numpy(), np.ones(12), rtol=1e-5)  # last step normalises samples
    converged = sinkhorn_knopp(logits, temp=0.05, n_iterations=200)
    np.testing.assert_allclose(converged.sum(dim=0).numpy(), np.full(5, 12 / 5), rtol=1e-4)
    np.testing.assert_allclose(converged.sum(dim=1).numpy(), np.ones(12), rtol=1e-5)
    plain = _softmax(logits.numpy() / 0.05)
    assert np.ptp(targets.sum(dim=0).numpy()) < np.ptp(plain.sum(axis=0))  # usage is evened out


def test_sinkhorn_does_not_overflow_when_prototype_magnitudes_grow():
    """Logits up to 4 at temperature 0.04 reach exp(100), beyond float32; the result is DINOv2's, in float64."""
    logits = 4 * torch.tanh(torch.randn(10, 6, generator=torch.Generator().manual_seed(3)))
    q = np.exp(logits.double().numpy() / 0.04).T  # DINOv2's unshifted Sinkhorn-Knopp, K×B
    q /= q.sum()
    for _ in range(3):
        q /= q.sum(axis=1, keepdims=True) * 6
        q /= q.sum(axis=0, keepdims=True) * 10
    targets = sinkhorn_knopp(logits, 0.04)
    assert torch.isfinite(targets).all()
    np.testing.assert_allclose(targets.numpy(), (q * 10).T, rtol=1e-4, atol=1e-7)


def test_sinkhorn_global_sample_count_scales_the_column_mass():
    logits = torch.tanh(torch.randn(6, 4, generator=torch.Generator().manual_seed(1)))
    np.testing.assert_allclose(sinkhorn_knopp(logits, 0.05, n_samples=6).numpy(),
                               sinkhorn_knopp(logits, 0.05).numpy(), rtol=1e-6)


def test_center_used_at_step_n_comes_from_steps_before_n():
    rng = np.random.default_rng(0)
    batches = [np.tanh(rng.normal(size=(4, 3))) for _ in range(3)]
    center = Center(num_prototypes=3, momentum=0.9)
    expected_center = np.zeros(3)
    for batch in batches:
        targets = center.targets(torch.tensor(batch, dtype=torch.float32), temp=0.04)
        np.testing.assert_allclose(targets.numpy(), _softmax((batch - expected_center) / 0.04), rtol=1e-5, atol=1e-7)
        center.update(torch.tensor(batch, dtype=torch.float32))
        expected_center = 0.9 * expected_center + 0.1 * batch.mean(axis=0)
        np.testing.assert_allclose(center.center.numpy()[0], expected_center, rtol=1e-5, atol=1e-8)


def test_center_accepts_patch_logits_of_any_leading_shape():
    logits = torch.randn(2, 5, 3)
    center = Center(num_prototypes=3)
    center.update(logits)
    np.testing.assert_allclose(center.center[0].numpy(), 0.1 * logits.reshape(-1, 3).mean(0).numpy(), rtol=1e-6)
    assert "center" in center.state_dict()


def test_all_reduce_hooks_under_a_one_process_group(tmp_path):
    logits = torch.tanh(torch.randn(8, 4, generator=torch.Generator().manual_seed(2)))
    expected = sinkhorn_knopp(logits, 0.05)
    local = Center(4)
    local.update(logits)
    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        np.testing.assert_allclose(sinkhorn_knopp(logits, 0.05).numpy(), expected.numpy(), rtol=1e-6)
        reduced = Center(4)
        reduced.update(logits)
        np.testing.assert_allclose(reduced.center.numpy(), local.center.numpy(), rtol=1e-6)
    finally:
        dist.destroy_process_group()


def _sinkhorn_on_rank(rank: int, store: str, out: str, logits: torch.Tensor, splits: list[list[int]]) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{store}", rank=rank, world_size=2)
    try:
        results = [sinkhorn_knopp(logits[split[rank]:split[rank + 1]], 0.04, n_samples=len(logits))
                   for split in splits]
        torch.save(results, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


def test_sinkhorn_over_two_processes_equals_one_process_on_the_whole_batch(tmp_path):
    """The per-prototype shift is the global maximum, so uneven or empty shards give the same targets."""
    logits = 4 * torch.tanh(torch.randn(10, 6, generator=torch.Generator().manual_seed(4)))
    splits = [[0, 7, 10], [0, 10, 10]]  # 7 + 3 rows, then 10 + 0
    mp.spawn(_sinkhorn_on_rank, args=(str(tmp_path / "store"), str(tmp_path / "q"), logits, splits), nprocs=2)
    expected = sinkhorn_knopp(logits, 0.04)
    shards = [torch.load(tmp_path / f"q.{rank}") for rank in range(2)]
    for index in range(len(splits)):
        np.testing.assert_allclose(torch.cat([shards[0][index], shards[1][index]]).numpy(), expected.numpy(),
                                   rtol=1e-5, atol=1e-8)
