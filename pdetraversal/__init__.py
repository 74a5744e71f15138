"""pdetraversal: latent traversals of generative models as potential flows (Song et al., ICML 2023).

Public API: `PotentialFlow` (potentials.py). The PDE terms live in `pdetraversal.pde`, the other losses in
`pdetraversal.losses`, the auxiliary classifier in `pdetraversal.classifier`, one training step in
`pdetraversal.training`, weak supervision by known moves (L_z) in `pdetraversal.transitions`, the Ada-GVAE posterior
sharing of the disentangled generator in `pdetraversal.adagvae`.
"""
from .potentials import PotentialFlow

__all__ = ["PotentialFlow"]
__version__ = "0.1.0"
