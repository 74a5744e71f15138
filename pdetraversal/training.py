"""One training step of the pre-trained-generator setting (paper Sec. 4.2, 4.4): L = L_u + L_f + L_J + L_k.

For each sample: k ~ U{0..K−1}, t ~ U{0..T−2}; flow z_0 -> z_t -> z_{t+1} with the potential's own velocity field,
decode x_t = G(z_t) and x_{t+1} = G(z_{t+1}), and combine
    L_u  initial condition ‖∇_z u^k(z_0, 0)‖²             (pde.initial_condition)
    L_f  wave-equation residual at (z_t, t)                (pde.wave_residual)
    L_J  saturated image-space speed of the step           (losses.jacobian_term)
    L_k  the classifier naming k from (x_t, x_{t+1})       (losses.classifier_loss)
By default each sample draws its own k and t, so every batch shows the classifier all K classes and trains all K
potentials. `LossConfig(draw="step")` is the paper's draw (Sec. 4.4): one k and one t for the whole batch, which
trains one potential per step. Per step, the default's cost is that of the K potentials' weight gradients, each from
B/K rows (bench/speed.py times both against the authors' step). The prefix z_0 -> z_t is rolled out without a graph;
the losses act on the last step, where the PDE, the speed and the classifier are evaluated.
For PotentialFlow (whose velocity is ∇_z u) one forward pass of u serves the residual at (z_t, t), the step
∇_z u^k(z_t, t) and L_u's ∇_z u^k(z_0, 0): the z_0 rows ride along after the z_t rows
(`pde.wave_residual_and_gradient`), the same arithmetic as three separate passes, with each potential's weights
read once instead of three times.
The generator is frozen: eval mode, no parameter gradients (checked, not silently changed).
A remedy outside the paper, off by default: `LossConfig.diversity` adds L_div, the mean squared cosine between the
image-space steps J_G·∇u^k and J_G·∇u^k' of two different potentials at the same point (`losses.diversity_term`).
The classifier alone is satisfied by potentials that move the same factor at different speeds or places; L_div asks
their image changes to point different ways.
With known transformations, the first potentials can also follow them (`pdetraversal.transitions`, L_z of eq. 8);
`supervised` tells the step which potentials those are.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import losses, pde
from .potentials import PotentialFlow


@dataclass
class LossConfig:
    """Weights of the four terms and how the Laplacian is computed."""

    initial: float = 1.0
    pde: float = 1.0
    jacobian: float = 1.0
    classifier: float = 1.0
    jacobian_saturation: float = 0.1
    laplacian: str = "exact"
    num_probes: int = 1
    diversity: float = 0.0  # weight of L_div (a remedy, not in the paper; 0 = the paper's loss)
    draw: str = "sample"  # "sample": k and t per sample; "step": one k and one t per batch (the paper's, Sec. 4.4)


DRAWS = ("sample", "step")


def draw_k_and_t(num_potentials: int, num_timesteps: int, batch: int, draw: str = "sample",
                 rng: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(k, t), each (batch,): k ~ U{0..K−1}, t ~ U{0..T−2}, per sample or (draw="step") one pair for the batch."""
    if draw not in DRAWS:
        raise ValueError(f"draw must be one of {', '.join(DRAWS)}, got {draw!r}")
    n = batch if draw == "sample" else 1
    k = torch.randint(num_potentials, (n,), generator=rng)
    t = torch.randint(num_timesteps - 1, (n,), generator=rng)
    return k.expand(batch).contiguous(), t.expand(batch).contiguous()


def check_frozen(generator: nn.Module) -> None:
    if generator.training or any(p.requires_grad for p in generator.parameters()):
        raise ValueError("the generator must be frozen: call generator.eval().requires_grad_(False) first")


def rollout(flow: PotentialFlow, z0: torch.Tensor, k: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """z_{t_i} for each sample i (its own number of steps t_i), without a graph."""
    z = z0.detach()
    with torch.no_grad():
        for i in range(int(t.max()) if t.numel() else 0):
            # Only the samples still moving are evaluated (on average half of them): the others stay where they are.
            moving = torch.nonzero(t > i).squeeze(1)
            step = flow.step_size * flow.velocity(z[moving], float(i), k[moving])
            z = z.index_copy(0, moving, z[moving] + step)
    return z


def velocity_is_gradient(flow) -> bool:
    """Whether `flow.velocity` is PotentialFlow's ∇_z u of its `potential`: then the residual's ∇_z u is the step."""
    return isinstance(flow, PotentialFlow) and type(flow).velocity is PotentialFlow.velocity


def training_step(flow: PotentialFlow, classifier: nn.Module, generator, z0: torch.Tensor,
                  losses_config: LossConfig = LossConfig(), rng: torch.Generator | None = None, supervised: int = 0):
    """Returns (total loss, dict of floats: the four terms, the total and the classifier's batch accuracy).

    Potentials k < `supervised` follow targets of their own (`pdetraversal.transitions`): L_J, which would push
    their steps to grow, skips them; the PDE terms and the classifier still apply."""
    check_frozen(generator)
    cfg = losses_config
    B = z0.shape[0]
    k, t = draw_k_and_t(flow.num_potentials, flow.num_timesteps, B, cfg.draw, rng)
    k, t = k.to(z0.device), t.to(z0.device)
    z_t = rollout(flow, z0, k, t)
    t_real = t.to(z0.dtype)
    c = flow.wave_speed[k]

    if velocity_is_gradient(flow):
        points, times = torch.cat([z_t, z0.detach()]), torch.cat([t_real, torch.zeros_like(t_real)])
        k_both = k.repeat(2)
        f, grad_z = pde.wave_residual_and_gradient(lambda z, tt: flow.potential(z, tt, k_both), points, times, c,
                                                   cfg.laplacian, cfg.num_probes, rng, rows=B)
        velocity_t, velocity_0 = grad_z[:B], grad_z[B:]
    else:
        f = pde.wave_residual(lambda z, tt: flow.potential(z, tt, k), z_t, t_real, c, cfg.laplacian, cfg.num_probes,
                              rng)
        velocity_t, velocity_0 = flow.velocity(z_t, t_real, k), flow.velocity(z0.detach(), 0.0, k)
    loss_f = f.pow(2).mean()
    loss_u = pde.initial_condition(velocity_0).mean()

    step = flow.step_size * velocity_t
    z_start = z_t
    if cfg.diversity:
        # The same point stepped by another potential k' != k: both image-space steps in one forward-mode pass.
        other = (k + torch.randint(1, flow.num_potentials, (B,), generator=rng).to(k.device)) % flow.num_potentials
        step_other = flow.step_size * flow.velocity(z_start, t_real, other)
        x_t, jv_both = losses.jacobian_vector_product(generator.decode, torch.cat([z_start, z_start]),
                                                      torch.cat([step, step_other]))
        x_t, jv = x_t[:B], jv_both[:B]
        loss_div = losses.diversity_term(jv, jv_both[B:]).mean()
    else:
        x_t, jv = losses.jacobian_vector_product(generator.decode, z_start, step)
        loss_div = torch.zeros((), device=z0.device)
    loss_j = (losses.jacobian_term(jv, cfg.jacobian_saturation) * (k >= supervised)).mean()
    logits = classifier(x_t.detach(), generator.decode(z_start + step))
    loss_k = losses.classifier_loss(logits, k)

    total = cfg.initial * loss_u + cfg.pde * loss_f + cfg.jacobian * loss_j + cfg.classifier * loss_k
    logs = {
        "loss": total.item(), "L_u": loss_u.item(), "L_f": loss_f.item(), "L_J": loss_j.item(),
        "L_k": loss_k.item(), "acc": (logits.argmax(1) == k).float().mean().item(),
    }
    if cfg.diversity:
        total = total + cfg.diversity * loss_div
        logs.update(loss=total.item(), L_div=loss_div.item())
    return total, logs
