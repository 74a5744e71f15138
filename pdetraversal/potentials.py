"""K scalar potentials u^k(z, t) and the flows they induce (paper eq. 2, Sec. 4.1: z_{t+1} = z_t + ∇_z u^k(z_t, t)).

Each potential is the paper's small MLP: z -> Linear -> Tanh; t -> sinusoidal -> Linear -> GELU -> Linear; the two
streams are added, then Linear -> Tanh -> Linear -> scalar (optionally a final Tanh, which bounds u).
The K networks are stored as stacked weights (K, in, out), so a batch with a different k per sample runs in one
vectorised call (each row goes through all K layers, then keeps its own): the Space renders all K traversals at
once and training mixes all k in one batch. A single int k uses only its own weights.
Each k also owns a learnable wave speed c^k (initialised to 1) used by the wave equation in `pde.py`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .traversal import Traversal


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(B,) real times -> (B, dim) sin/cos features; smooth in t, so ∂²u/∂t² exists."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / max(half, 1))
    angles = t[:, None] * freqs[None, :]
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)
    return F.pad(emb, (0, dim - 2 * half))


class StackedLinear(nn.Module):
    """K independent Linear layers; `forward(x, k)` applies layer k[i] to x[i] (or layer k to all rows)."""

    def __init__(self, num: int, fan_in: int, fan_out: int):
        super().__init__()
        bound = 1.0 / math.sqrt(fan_in)  # nn.Linear's default initialisation, per potential
        self.weight = nn.Parameter(torch.empty(num, fan_in, fan_out).uniform_(-bound, bound))
        self.bias = nn.Parameter(torch.empty(num, fan_out).uniform_(-bound, bound))

    def forward(self, x: torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        if isinstance(k, int):
            return x @ self.weight[k] + self.bias[k]
        # Every row through all K layers, then each row keeps its own. Gathering a (B, in, out) weight copy per row
        # instead costs B·in·out memory, and the Laplacian's Hessian-vector products multiply that again.
        out = torch.einsum("bi,kio->bko", x, self.weight) + self.bias
        return out.gather(1, k[:, None, None].expand(-1, 1, out.shape[-1])).squeeze(1)


class PotentialFlow(Traversal, tags=["latent-traversal", "potential-flow", "pdetraversal"]):
    """K potentials over a d-dimensional latent space. The constructor arguments are the config saved with the weights.

    Args:
        latent_dim: d, the generator's latent size.
        num_potentials: K.
        hidden_dim: width of each potential's MLP (the paper uses d).
        num_timesteps: T, the traversal length the potentials were trained for.
        step_size: default step size for `traverse`.
        output_tanh: end with Tanh (bounded u), as the paper does except for StyleGAN2.
        generator: repo id or folder of the generator the potentials were trained for.
        generator_revision: its revision (a commit sha when published).
        labels: optional human-readable name per k.
        exact_initial: multiply u by tanh(t), so ∇_z u(z, 0) = 0 holds exactly and the first step is zero (a remedy
            outside the paper, whose initial condition L_u of eq. 4 is only a penalty and, measured, is not met).
    """

    method_name = "potential"  # its key in pdetraversal.baselines.METHODS, written into config.json
    pde_terms = True  # trained with L_u and L_f (the wave equation)
    default_label = "potential"

    def __init__(
        self,
        latent_dim: int,
        num_potentials: int,
        hidden_dim: int | None = None,
        num_timesteps: int = 10,
        step_size: float = 1.0,
        output_tanh: bool = True,
        generator: str | None = None,
        generator_revision: str | None = None,
        labels: list[str] | None = None,
        exact_initial: bool = False,
    ):
        super().__init__(latent_dim, num_potentials, num_timesteps, step_size, generator, generator_revision, labels)
        h = hidden_dim or latent_dim
        self.hidden_dim, self.output_tanh, self.exact_initial = h, output_tanh, exact_initial
        self.z_in = StackedLinear(num_potentials, latent_dim, h)
        self.t_in = StackedLinear(num_potentials, h, h)
        self.t_hidden = StackedLinear(num_potentials, h, h)
        self.fuse = StackedLinear(num_potentials, h, h)
        self.out = StackedLinear(num_potentials, h, 1)
        self.wave_speed = nn.Parameter(torch.ones(num_potentials))

    def _time(self, t: float | torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, dtype=z.dtype, device=z.device)
        return t.expand(z.shape[0]) if t.ndim == 0 else t

    def potential(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """u^k(z, t) -> (B,). t: a number or (B,); k: an int or (B,) integer tensor."""
        k = self._check(z, k)
        t = self._time(t, z)
        h_z = torch.tanh(self.z_in(z, k))
        h_t = self.t_hidden(F.gelu(self.t_in(sinusoidal_embedding(t, self.hidden_dim), k)), k)
        u = self.out(torch.tanh(self.fuse(h_z + h_t, k)), k).squeeze(1)
        u = torch.tanh(u) if self.output_tanh else u
        return torch.tanh(t) * u if self.exact_initial else u

    def velocity(self, z: torch.Tensor, t: float | torch.Tensor, k: int | torch.Tensor) -> torch.Tensor:
        """∇_z u^k(z, t) -> (B, d). Keeps the graph (for training) whenever grad mode is on."""
        create_graph = torch.is_grad_enabled()
        with torch.enable_grad():
            z_ = z if z.requires_grad else z.detach().requires_grad_(True)
            u = self.potential(z_, t, k)
            # Samples are independent, so the gradient of the sum is each sample's own gradient.
            (grad,) = torch.autograd.grad(u.sum(), z_, create_graph=create_graph)
        return grad


def traverse_both_ways(flow, z0: torch.Tensor, k, num_steps: int | None = None,
                       step_size: float | None = None) -> torch.Tensor:
    """(2·S + 1, B, d): the negative end, ..., z_0, ..., the positive end (z_0 once, at index S). Detached.

    Takes any object with PotentialFlow's `traverse`."""
    neg = flow.traverse(z0, k, num_steps, step_size, direction=-1).detach()
    pos = flow.traverse(z0, k, num_steps, step_size, direction=1).detach()
    return torch.cat([neg.flip(0), pos[1:]])
