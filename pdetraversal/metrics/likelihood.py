"""log p(x) of a VAE by importance sampling: the IWAE bound (Burda et al., ICLR 2016), the paper's log-likelihood
column for the VAE trained with its potentials (Sec. 4.3).

    log p(x) >= L_S(x) = log (1/S) Σ_s p(x | z_s) p(z_s) / q(z_s | x),   z_s ~ q(z | x) = N(mu(x), diag exp(logvar(x)))

with the prior p(z) = N(0, I). L_1 is the ELBO in expectation; L_S grows with S towards log p(x) and equals it for
every S when q is the exact posterior. The sum is taken as a logsumexp over the S log-weights, so nothing is
exponentiated outside float range. Results are in nats per image.

Public: `iwae_log_likelihood`, `bernoulli_log_likelihood`, `evaluate_log_likelihood`.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

_LOG_2PI = math.log(2 * math.pi)


def bernoulli_log_likelihood(decode_logits: Callable[[torch.Tensor], torch.Tensor]):
    """log p(x | z) for Bernoulli pixels with logits decode_logits(z): −BCE with logits, summed over pixels."""

    def log_likelihood(x: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        logits = decode_logits(z)
        if logits.shape != x.shape:
            raise ValueError(f"decoded logits {tuple(logits.shape)} do not match the images {tuple(x.shape)}")
        return -F.binary_cross_entropy_with_logits(logits, x, reduction="none").flatten(1).sum(1)

    return log_likelihood


def _standard_normal_log_density(z: torch.Tensor) -> torch.Tensor:
    return -0.5 * (z.pow(2) + _LOG_2PI).sum(1)


@torch.no_grad()
def iwae_log_likelihood(encode: Callable, log_likelihood: Callable, x: torch.Tensor, num_samples: int = 100,
                        batch_size: int = 4096, seed: int = 0) -> torch.Tensor:
    """The S-sample IWAE estimate L_S(x) of log p(x) for each image: (B,), in nats.

    encode(x) -> (mu, logvar), each (B, d); log_likelihood(x, z) -> (n,) is log p(x | z) for aligned rows of x and z.
    `batch_size` bounds the rows (image, sample) per log_likelihood call; the same seed and batch_size give the
    same samples."""
    if not isinstance(num_samples, int) or isinstance(num_samples, bool) or num_samples < 1:
        raise ValueError(f"num_samples must be a positive int, got {num_samples!r}")
    if not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    if x.ndim < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch (B, ...) with B >= 1, got shape {tuple(x.shape)}")
    gen = torch.Generator(device=x.device).manual_seed(seed)
    images_per_call = min(x.shape[0], batch_size)
    out = []
    for xb in x.split(images_per_call):
        mu, logvar = encode(xb)
        if mu.ndim != 2 or mu.shape[0] != xb.shape[0] or logvar.shape != mu.shape:
            raise ValueError(f"encode must return (mu, logvar) of shape (B, d) for B={xb.shape[0]}, "
                             f"got {tuple(mu.shape)} and {tuple(logvar.shape)}")
        b, d = mu.shape
        std = torch.exp(0.5 * logvar)
        samples_per_call = max(1, batch_size // b)
        log_w = []
        for s in range(0, num_samples, samples_per_call):
            s_n = min(samples_per_call, num_samples - s)
            eps = torch.randn((s_n, b, d), generator=gen, device=mu.device, dtype=mu.dtype)
            z = mu + std * eps  # (s_n, b, d)
            # log q from eps directly: (z - mu) / std would lose digits where std is tiny.
            log_q = -0.5 * (eps.pow(2) + logvar + _LOG_2PI).sum(2)
            log_prior = _standard_normal_log_density(z.flatten(0, 1)).view(s_n, b)
            x_rep = xb.unsqueeze(0).expand(s_n, *xb.shape).flatten(0, 1)
            log_px_z = log_likelihood(x_rep, z.flatten(0, 1))
            if log_px_z.shape != (s_n * b,):
                raise ValueError(f"log_likelihood must return one value per row, shape ({s_n * b},), "
                                 f"got {tuple(log_px_z.shape)}")
            log_w.append(log_px_z.view(s_n, b) + log_prior - log_q)
        out.append(torch.logsumexp(torch.cat(log_w), dim=0) - math.log(num_samples))
    return torch.cat(out)


def evaluate_log_likelihood(vae, images: torch.Tensor, num_samples: int = 100, batch_size: int = 4096,
                            seed: int = 0) -> dict:
    """Mean IWAE log p(x) (nats per image) of a Bernoulli VAE with `encode` and `decode_logits` over `images`.

    Returns dict(mean, std, sem, num_images, num_samples); std over images, sem = std / sqrt(num_images)."""
    was_training = vae.training
    vae.eval()
    try:
        ll = iwae_log_likelihood(vae.encode, bernoulli_log_likelihood(vae.decode_logits), images, num_samples,
                                 batch_size, seed)
    finally:
        vae.train(was_training)
    n = ll.numel()
    std = float(ll.std()) if n > 1 else 0.0
    return dict(mean=float(ll.mean()), std=std, sem=std / math.sqrt(n), num_images=n, num_samples=num_samples)
