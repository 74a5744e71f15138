"""pdetraversal: latent traversals of generative models as potential flows (Song et al., ICML 2023).

Public API: `PotentialFlow` (potentials.py). The PDE terms live in `pdetraversal.pde`, the other losses in
`pdetraversal.losses`, the auxiliary classifier in `pdetraversal.classifier`, one training step in
`pdetraversal.training`.
"""
from .potentials import PotentialFlow

__all__ = ["PotentialFlow"]
__version__ = "0.1.0"
