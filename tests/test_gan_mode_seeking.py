"""The mode-seeking term (gan.g_mode_seeking, MSGAN): variety within a class, judged at galaxy scale."""

from __future__ import annotations

import pytest
import torch

from galearn.gan.loss import mode_seeking_penalty


def _blob(x0: float, y0: float, size: int = 32) -> torch.Tensor:
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    return torch.exp(-((xx - x0) ** 2 + (yy - y0) ** 2) / (2 * 2.0**2)).expand(3, size, size) * 1.6 - 0.8


def test_only_pairs_of_one_class_count_and_the_value_is_msgan_s_ratio():
    g = torch.Generator().manual_seed(0)
    fake, z = torch.rand(4, 3, 16, 16, generator=g), torch.randn(4, 8, generator=g)
    y = torch.tensor([0, 1, 0, 2])  # one same-class pair: (0, 2)
    pooled = torch.nn.functional.avg_pool2d(fake, 4).flatten(1)
    ratio = (pooled[0] - pooled[2]).abs().mean() / (z[0] - z[2]).abs().mean()
    torch.testing.assert_close(mode_seeking_penalty(fake, z, y), 1.0 / (ratio + 1e-5))
    none = mode_seeking_penalty(fake.requires_grad_(True), z, torch.tensor([0, 1, 2, 3]))
    assert float(none) == 0.0 and not none.requires_grad  # no pair of one class: nothing to push
    with pytest.raises(ValueError, match="4 stamps, 3 latents"):
        mode_seeking_penalty(fake, z[:3], y)


def test_a_collapsed_class_costs_more_than_a_varied_one_and_its_gradient_spreads_it():
    z = torch.randn(4, 16, generator=torch.Generator().manual_seed(1))
    y = torch.zeros(4, dtype=torch.long)
    same = torch.stack([_blob(16, 16)] * 4)
    varied = torch.stack([_blob(10, 10), _blob(22, 10), _blob(10, 22), _blob(22, 22)])
    assert float(mode_seeking_penalty(same + 1e-3 * torch.randn(same.shape), z, y)) > 50 * float(
        mode_seeking_penalty(varied, z, y))
    nearly = (same + 0.05 * torch.randn(same.shape, generator=torch.Generator().manual_seed(2))).requires_grad_(True)
    mode_seeking_penalty(nearly, z, y).backward()
    stepped = (nearly - 1e-4 * nearly.grad).detach()
    spread = lambda x: torch.pdist(torch.nn.functional.avg_pool2d(x, 4).flatten(1), p=1).mean()  # noqa: E731
    assert float(spread(stepped)) > float(spread(nearly.detach()))


def test_per_pixel_noise_counts_less_than_a_galaxy_moved():
    """Two draws always differ by their sky noise; the term judges 4x4-pixel blocks, so a galaxy moved by 8 pixels
    counts as more variety than noise of the same pixel RMS -- per pixel (pool 1) it is the other way round."""
    g = torch.Generator().manual_seed(3)
    z, y = torch.randn(2, 16, generator=g), torch.zeros(2, dtype=torch.long)
    a, moved = _blob(12, 16), _blob(20, 16)
    noisy = a + float((moved - a).square().mean().sqrt()) * torch.randn(a.shape, generator=g)
    pairs = {"moved": torch.stack([a, moved]), "noisy": torch.stack([a, noisy])}
    blocks = {k: float(mode_seeking_penalty(v, z, y)) for k, v in pairs.items()}
    pixels = {k: float(mode_seeking_penalty(v, z, y, pool=1)) for k, v in pairs.items()}
    assert blocks["moved"] < 0.8 * blocks["noisy"]
    assert pixels["noisy"] < 0.5 * pixels["moved"]
