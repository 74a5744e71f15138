"""The latent matching loss L_z of the paper's eq. 8 (Sec. 4.3), for sequences of a known transformation.

Given a real sequence x_0, ..., x_S produced by a known transformation (a digit rotated step by step, a sprite moved
one position at a time) and its codes z_t = Enc(x_t), potential k flows from the first code,

    ẑ_0 = z_0,   ẑ_{t+1} = ẑ_t + η·∇_z u^k(ẑ_t, t)        (eq. 2, step size η),

and eq. 8 asks the flowed codes to stay on the encoded sequence and each flowed step to match the encoded step:

    L_z = ‖z_t − ẑ_t‖² + ‖z_{t+1} − z_t − η·∇_z u^k(ẑ_t, t)‖²,

averaged here over the sequence's steps t = 0..S−1. The rollout keeps its graph: the first term only reaches the
potential through the earlier steps of ẑ (at t = 0 it is 0 by construction). With a frozen generator the codes are
constants (pass them without grad); when the VAE trains with its potentials (Sec. 4.3) they carry the encoder's
gradient.

Sequences of different lengths share a batch through `lengths`: sample i contributes its first lengths[i] steps.
No sequence of moves may close a loop: a potential flow is a gradient field, whose circulation around any loop is
zero, so it cannot carry a code around one (see `pdetraversal.data.dsprites_moves`).
"""
from __future__ import annotations

import torch


def sequence_matching_loss(flow, codes: torch.Tensor, k: int | torch.Tensor,
                           lengths: torch.Tensor | None = None) -> torch.Tensor:
    """L_z (eq. 8) per sequence -> (B,), the mean over its steps.

    flow: anything with `velocity(z, t, k)` and `step_size` (a PotentialFlow or a trainable baseline).
    codes: (S + 1, B, d), the encodings z_0..z_S of each real sequence. k: the potential per sequence.
    lengths: (B,) number of valid steps per sequence, 1..S (default S for all).
    """
    if codes.ndim != 3 or codes.shape[0] < 2:
        raise ValueError(f"codes must have shape (S + 1, B, d) with S >= 1, got {tuple(codes.shape)}")
    num_steps, batch = codes.shape[0] - 1, codes.shape[1]
    if lengths is None:
        lengths = torch.full((batch,), num_steps, device=codes.device)
    if lengths.shape != (batch,) or int(lengths.min()) < 1 or int(lengths.max()) > num_steps:
        raise ValueError(f"lengths must be (B,) = ({batch},) integers in 1..{num_steps}")
    z_hat = codes[0]
    total = torch.zeros(batch, dtype=codes.dtype, device=codes.device)
    for t in range(int(lengths.max())):
        step = flow.step_size * flow.velocity(z_hat, float(t), k)
        term = (codes[t] - z_hat).pow(2).sum(-1) + (codes[t + 1] - codes[t] - step).pow(2).sum(-1)
        total = total + term * (t < lengths).to(codes.dtype)
        z_hat = z_hat + step
    return total / lengths.to(codes.dtype)


__all__ = ["sequence_matching_loss"]
