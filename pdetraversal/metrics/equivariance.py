"""The equivariance error of the paper's eq. 11, on real transformation sequences x_0, ..., x_T.

    E = Σ_{t=1..T} | x_t − Dec(ẑ_t) |,   ẑ_0 = z_0 = Enc(x_0),   ẑ_{t+1} = ẑ_t + step · ∇_z u^k(ẑ_t, t)

How well does flowing the code of the first frame along potential k reproduce the true transformation (Sec. 4.3,
the VAE trained with its potentials)? z_0 is the encoder's posterior mean and ẑ_t come from `method.traverse(z_0, k,
T)`, so any method with the traversal interface can be scored. t = 0 is left out of the sum: ẑ_0 = z_0 for every
method, and its term is the VAE's reconstruction error, reported on its own.

Reported two ways: `per_pixel`, the mean absolute error over pixels, steps and sequences (comparable across image
sizes and T), and `summed`, Σ_t Σ_pixels |·| per sequence averaged over sequences, as the paper sums it. The
reference (`reference_*`) is the code that does not move (∇u = 0: every x_t against Dec(z_0)); the paper's table
lists it as the lower-bound reference. A method that moves the image the right way scores below it.

Public: `equivariance_error`.
"""
from __future__ import annotations

import torch


def _codes(encode, x: torch.Tensor) -> torch.Tensor:
    out = encode(x)
    return out[0] if isinstance(out, (tuple, list)) else out  # (mu, logvar): the posterior mean


def _flowed_codes(method, z0: torch.Tensor, k: torch.Tensor, num_steps: int, step_size) -> torch.Tensor:
    """(T+1, B, d): traversal k[i] from z0[i], run once per distinct k with an int k (any method accepts that)."""
    path = torch.empty((num_steps + 1, *z0.shape), dtype=z0.dtype, device=z0.device)
    for kk in k.unique().tolist():
        rows = (k == kk).nonzero().squeeze(1).to(z0.device)
        sub = method.traverse(z0[rows], int(kk), num_steps, step_size).detach()
        if sub.shape != (num_steps + 1, len(rows), z0.shape[1]):
            raise ValueError(f"traverse returned shape {tuple(sub.shape)}, expected "
                             f"({num_steps + 1}, {len(rows)}, {z0.shape[1]})")
        path[:, rows] = sub
    return path


def equivariance_error(method, encode, decode, sequences: torch.Tensor, k: int | torch.Tensor,
                       step_size: float | None = None, batch_size: int = 256) -> dict:
    """Eq. 11 for `method` on `sequences` (T+1, B, C, H, W), each sequence transformed by the known k (an int or (B,)).

    encode(x) -> codes (B, d) or (mu, logvar); decode(z) -> (B, C, H, W). step_size defaults to the method's own;
    `batch_size` sequences are flowed and decoded at a time. Returns dict(per_pixel, summed, per_step,
    reference_per_pixel, reference_summed, reference_per_step, reconstruction_per_pixel, num_sequences, num_steps,
    num_pixels, step_size); per_step[t - 1] is the per-pixel error at step t."""
    if sequences.ndim != 5 or sequences.shape[0] < 2 or sequences.shape[1] < 1:
        raise ValueError(f"sequences must have shape (T+1, B, C, H, W) with T >= 1 and B >= 1, "
                         f"got {tuple(sequences.shape)}")
    num_steps, num_seq = sequences.shape[0] - 1, sequences.shape[1]
    if isinstance(k, torch.Tensor) and k.ndim == 0:
        k = int(k)
    if isinstance(k, int):
        k = torch.full((num_seq,), k, dtype=torch.long)
    if k.shape != (num_seq,) or k.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"k must be an int or an integer tensor of shape ({num_seq},), got {k.dtype} {tuple(k.shape)}")
    k = k.long().cpu()
    if int(k.min()) < 0 or int(k.max()) >= method.num_potentials:
        raise IndexError(f"k must lie in 0..{method.num_potentials - 1}")
    step_size = method.step_size if step_size is None else step_size

    err_step = torch.zeros(num_steps, dtype=torch.float64)
    ref_step = torch.zeros(num_steps, dtype=torch.float64)
    recon = 0.0
    for start in range(0, num_seq, batch_size):
        x = sequences[:, start:start + batch_size]
        b = x.shape[1]
        with torch.no_grad():
            z0 = _codes(encode, x[0])
        if z0.ndim != 2 or z0.shape[0] != b or z0.shape[1] != method.latent_dim:
            raise ValueError(f"encode must return codes of shape ({b}, {method.latent_dim}), got {tuple(z0.shape)}")
        path = _flowed_codes(method, z0.detach(), k[start:start + b], num_steps, step_size)
        with torch.no_grad():
            decoded = decode(path.flatten(0, 1))
            if decoded.shape != (b * (num_steps + 1), *x.shape[2:]):
                raise ValueError(f"decode returned shape {tuple(decoded.shape)}, expected images of shape "
                                 f"{tuple(x.shape[2:])}")
            decoded = decoded.view(num_steps + 1, *x.shape[1:]).to(x.device)
            # decoded[0] = Dec(z_0): the unmoved code, the reference for every step.
            err_step += (x[1:] - decoded[1:]).abs().flatten(2).mean(2).sum(1).double().cpu()
            ref_step += (x[1:] - decoded[:1]).abs().flatten(2).mean(2).sum(1).double().cpu()
            recon += float((x[0] - decoded[0]).abs().flatten(1).mean(1).sum())
    num_pixels = sequences[0, 0].numel()
    err_step, ref_step = err_step / num_seq, ref_step / num_seq
    return dict(
        per_pixel=float(err_step.mean()), summed=float(err_step.sum() * num_pixels), per_step=err_step.tolist(),
        reference_per_pixel=float(ref_step.mean()), reference_summed=float(ref_step.sum() * num_pixels),
        reference_per_step=ref_step.tolist(), reconstruction_per_pixel=recon / num_seq, num_sequences=num_seq,
        num_steps=num_steps, num_pixels=num_pixels, step_size=step_size,
    )
