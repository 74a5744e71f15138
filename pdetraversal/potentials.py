"""K scalar potentials u^k(z, t) and the flows they induce (paper eq. 2, Sec. 4.1: z_{t+1} = z_t + ∇_z u^k(z_t, t)).

Each potential is the paper's small MLP: z -> Linear -> Tanh; t -> sinusoidal -> Linear -> GELU -> Linear; the two
streams are added, then Linear -> Tanh -> Linear -> scalar (optionally a final Tanh, which bounds u).
The K networks are stored as stacked weights (K, in, out), so a batch with a different k per sample runs in one
call: the Space renders all K traversals at once and training mixes all k in one batch. A single int k uses only
its own weights. A per-row k is grouped once per call (`RowGroups`) and every layer then multiplies each k's rows
by that k's weights only: about one network's work over the batch, not K networks' (issue 14; before, every row went
through all K layers and kept its own, K times the work).
Each k also owns a learnable wave speed c^k (initialised to 1) used by the wave equation in `pde.py`.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .traversal import Traversal

# From this hidden width on, the sorted layout's training step beats the padded one's (measured at widths 32, 128, 256
# and 512 with K = 8, batch 64; bench/results/speed.md).
SORTED_FROM_WIDTH = 256


def sinusoidal_embedding(t: torch.Tensor, dim: int) -> torch.Tensor:
    """(...) real times -> (..., dim) sin/cos features; smooth in t, so ∂²u/∂t² exists."""
    half = dim // 2
    freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=t.dtype) / max(half, 1))
    angles = t[..., None] * freqs
    emb = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)
    return F.pad(emb, (0, dim - 2 * half))


class RowGroups:
    """The rows of a batch grouped by their potential index k, computed once and shared by every layer.

    Two layouts of the same rows (which is faster depends on the width; the maths is the same):
    "sorted": the rows in order of k, (B, ·); a layer multiplies each k's run of rows by its own weights, one
        matrix product per k present. The work is one network's, in as many products as there are k.
    "padded": a (G, m, ·) block per k present (G of them, m the largest group), short groups padded with zero rows
        that are computed and dropped; a layer is one batched product. One call per layer, G·m rows of work.
    Rows are only ever gathered (indexed), never scattered in place, so the layouts pass through autograd at any
    order and through torch.func's jvp and vmap alike. (Under vmap the padded layout's batched products are slow:
    `pde.forward_mode_laplacian` through it loses to the d backward passes from d = 128 on, through the sorted one
    it wins; see `pde.FORWARD_MODE_MAX_DIM`.)
    """

    def __init__(self, k: torch.Tensor, num: int, padded: bool):
        counts = torch.bincount(k, minlength=num)
        self.padded = padded
        self.order = torch.argsort(k, stable=True)
        self.present = torch.nonzero(counts).squeeze(1)
        self.present_list = self.present.tolist()
        self.counts = counts[self.present].tolist()
        self.all_present = len(self.counts) == num
        B = k.shape[0]
        if padded:
            G, m = len(self.counts), max(self.counts, default=0)
            self.shape = (G, m)
            # Row r of group g sits at slot g·m + r; empty slots read row B, a zero row appended before gathering.
            starts = torch.cumsum(counts[self.present], 0) - counts[self.present]
            group = torch.repeat_interleave(torch.arange(G, device=k.device), counts[self.present])
            rank = torch.arange(B, device=k.device) - starts[group]
            slots = group * m + rank  # of each sorted row
            self.source = torch.full((G * m,), B, dtype=torch.long, device=k.device)
            self.source[slots] = self.order
            self.back = torch.empty_like(self.order)
            self.back[self.order] = slots
        else:
            self.back = torch.argsort(self.order)

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """(B, ...) in batch order -> this layout."""
        if not self.padded:
            return x[self.order]
        padded = torch.cat([x, x.new_zeros((1,) + x.shape[1:])])[self.source]
        return padded.view(self.shape + x.shape[1:])

    def scatter(self, y: torch.Tensor) -> torch.Tensor:
        """This layout -> (B, ...) in batch order."""
        if self.padded:
            y = y.reshape((-1,) + y.shape[2:])
        return y[self.back]

    def _stacked(self, layer: StackedLinear) -> tuple[torch.Tensor, torch.Tensor]:
        """(G, in, out) weights and (G, out) biases of the k present; a copy unless all K are."""
        if self.all_present:
            return layer.weight, layer.bias
        return layer.weight[self.present], layer.bias[self.present]

    def _views(self, layer: StackedLinear) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each k present, as views: unbind's gradients are assembled once per layer, not once per
        k, and no weights are copied (indexing the k present copied up to K·in·out floats per layer and call, a
        fifth of the prefix rollout's time at d = 512 when some k had stopped moving)."""
        weights, biases = layer.weight.unbind(0), layer.bias.unbind(0)
        return [(weights[p], biases[p]) for p in self.present_list]

    def linear(self, layer: StackedLinear, x: torch.Tensor) -> torch.Tensor:
        """Layer k applied to the rows with that k, in this layout."""
        if self.padded:
            weight, bias = self._stacked(layer)
            return torch.baddbmm(bias[:, None, :], x, weight)
        return torch.cat([torch.addmm(b, rows, w) for (w, b), rows in zip(self._views(layer), x.split(self.counts))])

    def per_group(self, layer: StackedLinear, x: torch.Tensor) -> torch.Tensor:
        """(G, in), one row per k present (in order of k) -> (G, out): each row through its own k's layer."""
        if self.padded:
            weight, bias = self._stacked(layer)
            return torch.baddbmm(bias[:, None, :], x[:, None, :], weight).squeeze(1)
        return torch.cat([torch.addmm(b, row, w) for (w, b), row in zip(self._views(layer), x.split(1))])

    def spread(self, y: torch.Tensor) -> torch.Tensor:
        """(G, ·), one row per k present -> this layout, every row of group g holding y[g]."""
        if self.padded:
            return y[:, None].expand(self.shape + y.shape[1:])
        return y.repeat_interleave(torch.tensor(self.counts, device=y.device), dim=0)


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
        if x.shape[0] == 0:  # no rows, no groups: any layer gives the empty result, still on the graph
            return x @ self.weight[0] + self.bias[0]
        groups = RowGroups(k, self.weight.shape[0], padded=False)
        return groups.scatter(groups.linear(self, groups.gather(x)))


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
        # One time for the whole batch (the rollout, traversals): the time stream depends on (k, t) alone, so it
        # runs once per k instead of once per row, two of the four large products of a forward pass.
        shared_t = not torch.is_tensor(t) or t.ndim == 0
        t = self._time(t, z)
        if isinstance(k, int) or z.shape[0] == 0:  # an empty batch has no groups: any k's network serves
            k = k if isinstance(k, int) else 0
            linear = lambda layer, x: layer(x, k)  # noqa: E731
            return self._network(z, t, self._time_stream(t[:1] if shared_t else t, linear), linear)
        groups = RowGroups(k, self.num_potentials, padded=self.hidden_dim < SORTED_FROM_WIDTH)
        if shared_t:
            h_t = groups.spread(self._time_stream(t[:len(groups.counts)], groups.per_group))
        else:
            h_t = self._time_stream(groups.gather(t), groups.linear)
        return groups.scatter(self._network(groups.gather(z), groups.gather(t), h_t, groups.linear))

    def _time_stream(self, t: torch.Tensor, linear) -> torch.Tensor:
        """(...) times -> (..., h): sinusoidal -> Linear -> GELU -> Linear."""
        return linear(self.t_hidden, F.gelu(linear(self.t_in, sinusoidal_embedding(t, self.hidden_dim))))

    def _network(self, z: torch.Tensor, t: torch.Tensor, h_t: torch.Tensor, linear) -> torch.Tensor:
        """The MLP on rows laid out as (..., d) with times (...) and their time features h_t (broadcast against the
        rows); `linear(layer, x)` applies a StackedLinear."""
        h_z = torch.tanh(linear(self.z_in, z))
        u = linear(self.out, torch.tanh(linear(self.fuse, h_z + h_t))).squeeze(-1)
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
