"""pdetraversal: latent traversals of generative models as potential flows (Song et al., ICML 2023).

Public API: `PotentialFlow` (potentials.py), a `Traversal` (traversal.py) like every baseline in
`pdetraversal.baselines`. The PDE terms live in `pdetraversal.pde`, the other losses in `pdetraversal.losses`, the
auxiliary classifier in `pdetraversal.classifier`, one training step in `pdetraversal.training`, the latent matching
loss L_z (eq. 8) in `pdetraversal.transitions`, datasets in `pdetraversal.data`, evaluation in `pdetraversal.metrics`,
the Ada-GVAE posterior sharing of a weakly supervised generator in `pdetraversal.adagvae`.
"""
from .potentials import PotentialFlow

__all__ = ["PotentialFlow"]
__version__ = "0.2.0"
