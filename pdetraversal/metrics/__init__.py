"""Evaluation of traversals. No training loss lives here.

- `factors`: which dSprites factor each traversal changes, read by a factor regressor from the decoded frames.
- `path_shape`: straightness, turning, the first step against the later ones, and the wave-equation terms along the
  paths (eq. 2-4).
- `vp`: the VP score (appendix A.1): how often a 4-layer conv net trained on 10% of the [x_0, x_T] pairs names the
  traversal k that made them (test accuracy in %, chance 100/K).
- `likelihood`: the IWAE importance-sampled estimate of log p(x) for a VAE (nats per image, S >= 100 samples of q(z|x)).
- `equivariance`: the equivariance error of eq. 11, decoded flowed codes against real transformation sequences, per
  pixel and summed, with the not-moving reference.
- `curves`: how closely traversals follow known curved factor paths (the swirl generator).
"""
