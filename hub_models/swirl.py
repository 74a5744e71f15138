"""A dSprites generator with curved, known factor paths: G'(z) = G(φ(z)), G the anchored dSprites VAE decoder and φ a
swirl. It tests the paper's central claim (Sec. 4.1: potentials u^k(z, t) vary in space and time, so their flows
can bend, where a linear direction cannot) on a generator where the right answer is known.

The inner VAE (`DSpritesVAE`, e.g. hub_models/dsprites-vae) was trained with its coordinates w_0..w_4 anchored to the
factor labels (shape, scale, orientation, x, y; `pdetraversal.data.anchors`), so on it straight lines along the axes
are already the factors. Here the latent code is z = φ⁻¹(w): in each plane (i, j) of `planes`, φ turns the pair
(z_i, z_j) about the origin by the angle α·r, r = sqrt(z_i² + z_j²) the radius in that plane. A turn keeps the radius,
so φ⁻¹ turns by −α·r of the same r. The planes are disjoint, so the turns commute.

Factor f of the inner VAE moves along e_f in w; in z, its path through z_0 is

    γ_f(s) = φ⁻¹(φ(z_0) + s·e_f),

a curve whose tangent turns as the radius changes (`true_factor_path`). Facts used by the benchmark and the tests:
- φ preserves the prior: in polar coordinates of a plane it is (r, θ) -> (r, θ + α·r), whose Jacobian determinant is
  1, and N(0, I) depends on r alone; so z ~ N(0, I) gives w ~ N(0, I) and `sample_latent` is the inner prior.
- φ is C¹ (its derivative at the origin of a plane is the identity) and smooth elsewhere, so `decode` has the JVPs
  the Jacobian term L_J (eq. 5-6) needs.
- The encoder of G' is φ⁻¹ after the inner encoder's mean; the log-variance returned is the inner one, which is the
  posterior width in w, not in z. Only the means are used here (L_z, eq. 8, and `data_latent` take means).
- SeFa reads the first linear layer acting on z; G' has none (the swirl comes first), so `latent_weight` is None.

The state dict is the inner VAE's, under `inner.`, so a saved folder is self-contained.
"""
from __future__ import annotations

import math

import torch

from diffusers.configuration_utils import register_to_config

from .base import Generator
from .dsprites_vae import DSpritesVAE

# Keeps the radius's gradient finite at a plane's origin (sqrt has an infinite slope at 0); it changes the angle by
# at most α·1e-12 rad and never the radius, so warp and unwarp stay exact inverses.
_RADIUS_EPS2 = 1e-24


class SwirlVAE(Generator):
    """G'(z) = DSpritesVAE.decode(φ(z)) with φ the swirl of `planes` at `strength` α (radians per unit radius).

    Args:
        latent_dim, width, hidden_dim: the inner DSpritesVAE's.
        planes: disjoint coordinate pairs [i, j] to swirl; default [[3, 4], [1, 2]] (x–y and scale–orientation).
        strength: α, the angle in radians per unit radius.
    """

    @register_to_config
    def __init__(self, latent_dim: int = 5, width: int = 32, hidden_dim: int = 256,
                 planes: list[list[int]] | None = None, strength: float = 1.5):
        super().__init__()
        planes = [[3, 4], [1, 2]] if planes is None else [list(p) for p in planes]
        seen: set[int] = set()
        for p in planes:
            if len(p) != 2 or not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < latent_dim for i in p):
                raise ValueError(f"SwirlVAE: each plane must be two coordinate indices in [0, {latent_dim}), got {p!r}")
            if p[0] == p[1] or seen & set(p):
                raise ValueError(f"SwirlVAE: planes must be disjoint pairs of distinct coordinates, got {planes!r}")
            seen |= set(p)
        if isinstance(strength, bool) or not isinstance(strength, (int, float)) or not math.isfinite(strength):
            raise ValueError(f"SwirlVAE: strength must be a finite number, got {strength!r}")
        self.inner = DSpritesVAE(latent_dim=latent_dim, width=width, hidden_dim=hidden_dim)
        self.latent_dim = latent_dim
        self.image_shape = self.inner.image_shape
        self.planes = planes
        self.strength = float(strength)

    def _turn(self, z: torch.Tensor, sign: float) -> torch.Tensor:
        self.check_latent(z)
        cols = list(z.unbind(dim=1))  # new columns, no in-place writes: autograd and torch.func both see plain ops
        for i, j in self.planes:
            a, b = z[:, i], z[:, j]
            angle = sign * self.strength * torch.sqrt(a * a + b * b + _RADIUS_EPS2)
            c, s = torch.cos(angle), torch.sin(angle)
            cols[i], cols[j] = c * a - s * b, s * a + c * b
        return torch.stack(cols, dim=1)

    def warp(self, z: torch.Tensor) -> torch.Tensor:
        """φ: (B, d) codes of this generator -> (B, d) codes w of the inner VAE (each plane turned by +α·r)."""
        return self._turn(z, 1.0)

    def unwarp(self, w: torch.Tensor) -> torch.Tensor:
        """φ⁻¹: (B, d) codes of the inner VAE -> codes of this generator (each plane turned by −α·r)."""
        return self._turn(w, -1.0)

    def decode_logits(self, z: torch.Tensor) -> torch.Tensor:
        return self.inner.decode_logits(self.warp(z))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """(B, d) -> pixel probabilities (B, 1, 64, 64) in [0, 1] = inner.decode(φ(z)); differentiable in z."""
        return self.inner.decode(self.warp(z))

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, 1, 64, 64) -> (φ⁻¹(inner mean), inner log-variance). The log-variance is the inner posterior's, in w
        coordinates, not a posterior width in z: callers here use only the means."""
        mu, logvar = self.inner.encode(x)
        return self.unwarp(mu), logvar

    @torch.no_grad()
    def data_latent(self, n: int, seed: int | None = None) -> torch.Tensor:
        """φ⁻¹ of the inner VAE's codes of n fresh procedural dSprites."""
        return self.unwarp(self.inner.data_latent(n, seed))

    def latent_weight(self) -> None:
        """None: the first operation on z is the swirl, not a linear layer, so SeFa does not apply."""
        return None

    def true_factor_path(self, z0: torch.Tensor, factor: int, num_steps: int, step: float,
                         direction: int = 1) -> torch.Tensor:
        """(num_steps + 1, B, d): φ⁻¹(φ(z0) + direction·s·step·e_factor), s = 0..num_steps; the path that moves
        inner coordinate `factor` alone (factor f of the anchored VAE for f < 5)."""
        self.check_latent(z0)
        if not isinstance(factor, int) or not 0 <= factor < self.latent_dim:
            raise ValueError(f"factor must be an int in [0, {self.latent_dim}), got {factor!r}")
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        s = direction * step * torch.arange(num_steps + 1, dtype=z0.dtype, device=z0.device)
        w = self.warp(z0)[None].expand(num_steps + 1, -1, -1).clone()
        w[:, :, factor] += s[:, None]
        return self.unwarp(w.flatten(0, 1)).reshape(num_steps + 1, *z0.shape)


__all__ = ["SwirlVAE"]
