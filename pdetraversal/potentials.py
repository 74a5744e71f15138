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

from .hub import HubModule


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


class PotentialFlow(
    nn.Module,
    HubModule,
    library_name="pdetraversal",
    license="apache-2.0",
    tags=["latent-traversal", "potential-flow", "pdetraversal"],
    paper_url="https://arxiv.org/abs/2304.12944",
):
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
        super().__init__()
        if latent_dim < 1 or num_potentials < 1 or num_timesteps < 2:
            raise ValueError("need latent_dim >= 1, num_potentials >= 1 and num_timesteps >= 2")
        if labels is not None and len(labels) != num_potentials:
            raise ValueError(f"got {len(labels)} labels for {num_potentials} potentials")
        h = hidden_dim or latent_dim
        self.latent_dim, self.num_potentials, self.hidden_dim = latent_dim, num_potentials, h
        self.num_timesteps, self.step_size, self.output_tanh = num_timesteps, step_size, output_tanh
        self.labels, self.exact_initial = labels, exact_initial
        self.z_in = StackedLinear(num_potentials, latent_dim, h)
        self.t_in = StackedLinear(num_potentials, h, h)
        self.t_hidden = StackedLinear(num_potentials, h, h)
        self.fuse = StackedLinear(num_potentials, h, h)
        self.out = StackedLinear(num_potentials, h, 1)
        self.wave_speed = nn.Parameter(torch.ones(num_potentials))

    @property
    def config(self) -> dict:
        return dict(self._hub_mixin_config)

    def set_labels(self, labels: list[str] | None) -> None:
        """Name the potentials (e.g. after measuring what each one changes); saved with the config."""
        if labels is not None and len(labels) != self.num_potentials:
            raise ValueError(f"got {len(labels)} labels for {self.num_potentials} potentials")
        self.labels = labels
        self._hub_mixin_config["labels"] = labels

    def label(self, k: int) -> str:
        return self.labels[k] if self.labels else f"potential {k}"

    def _check(self, z: torch.Tensor, k: int | torch.Tensor) -> int | torch.Tensor:
        if z.ndim != 2 or z.shape[1] != self.latent_dim:
            raise ValueError(f"z must have shape (B, {self.latent_dim}), got {tuple(z.shape)}")
        if isinstance(k, torch.Tensor) and k.ndim == 0:
            k = int(k)
        if isinstance(k, int):
            if not 0 <= k < self.num_potentials:
                raise IndexError(f"potential index k={k} out of range 0..{self.num_potentials - 1}")
            return k
        if k.shape != (z.shape[0],) or k.dtype not in (torch.int64, torch.int32):
            raise ValueError(f"k must be an int or an integer tensor of shape ({z.shape[0]},), got {k.dtype} {tuple(k.shape)}")
        if k.numel() and (int(k.min()) < 0 or int(k.max()) >= self.num_potentials):
            raise IndexError(f"potential indices must lie in 0..{self.num_potentials - 1}")
        return k.long()

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

    def traverse(
        self,
        z0: torch.Tensor,
        k: int | torch.Tensor,
        num_steps: int | None = None,
        step_size: float | None = None,
        direction: int = 1,
        differentiable: bool = False,
    ) -> torch.Tensor:
        """Follow z_{t+1} = z_t + direction · step_size · ∇_z u^k(z_t, t) from z0; returns (num_steps + 1, B, d).

        The path is detached unless `differentiable` (then it keeps the graph through every step, for losses on
        whole traversals)."""
        if direction not in (1, -1):
            raise ValueError(f"direction must be +1 or -1, got {direction}")
        num_steps = self.num_timesteps if num_steps is None else num_steps
        if num_steps < 0:
            raise ValueError(f"num_steps must be >= 0, got {num_steps}")
        step = (self.step_size if step_size is None else step_size) * direction
        with torch.set_grad_enabled(differentiable and torch.is_grad_enabled()):
            path = [z0]
            for i in range(num_steps):
                path.append(path[-1] + step * self.velocity(path[-1], float(i), k))
            return torch.stack(path)


def traverse_both_ways(flow, z0: torch.Tensor, k, num_steps: int | None = None,
                       step_size: float | None = None) -> torch.Tensor:
    """(2·S + 1, B, d): the negative end, ..., z_0, ..., the positive end (z_0 once, at index S). Detached.

    Takes any object with PotentialFlow's `traverse`."""
    neg = flow.traverse(z0, k, num_steps, step_size, direction=-1).detach()
    pos = flow.traverse(z0, k, num_steps, step_size, direction=1).detach()
    return torch.cat([neg.flip(0), pos[1:]])
