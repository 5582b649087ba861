"""Self-supervised objectives as pure, jittable functions of ``[N, D]`` embeddings.

Reductions run over the global batch: under ``jax.jit`` with the batch sharded on a ``data`` mesh
axis, XLA inserts the cross-device collectives, so results match a single device.

=============  ===========================================  ================================
objective      functions                                    state
=============  ===========================================  ================================
Barlow Twins   barlow_twins, barlow_twins_grouped           -
SimCLR         simclr, simclr_per_sample                    -
InfoNCE        info_nce, info_nce_per_sample                -
BYOL           byol, byol_per_sample                        -
CorInfoMax     corinfomax, corinfomax_covariance,           CorInfoMaxState
               corinfomax_split_views
VICReg         vicreg, vicreg_invariance_per_sample         -
MoCo v2        mocov2, mocov2_symmetric, mocov2_enqueue,    queues [2, K, D], ptr
               mocov2_init_queue
SimSiam        simsiam, simsiam_per_sample                  -
SwAV           swav, sinkhorn_knopp                         prototypes are parameters
W-MSE          wmse, whiten                                 -
=============  ===========================================  ================================
"""
from jaxcssl.losses.barlow_twins import (
    barlow_twins,
    barlow_twins_grouped,
    cross_correlation,
)
from jaxcssl.losses.byol import byol, byol_per_sample
from jaxcssl.losses.corinfomax import (
    CorInfoMaxState,
    corinfomax,
    corinfomax_covariance,
    corinfomax_init_state,
    corinfomax_split_views,
)
from jaxcssl.losses.info_nce import info_nce, info_nce_per_sample
from jaxcssl.losses.mocov2 import mocov2, mocov2_enqueue, mocov2_init_queue, mocov2_symmetric
from jaxcssl.losses.simclr import simclr, simclr_per_sample
from jaxcssl.losses.simsiam import simsiam, simsiam_per_sample
from jaxcssl.losses.swav import sinkhorn_knopp, swav, swav_from_scores
from jaxcssl.losses.vicreg import vicreg, vicreg_invariance_per_sample
from jaxcssl.losses.wmse import whiten, wmse

__all__ = [
    "CorInfoMaxState",
    "barlow_twins",
    "barlow_twins_grouped",
    "byol",
    "byol_per_sample",
    "corinfomax",
    "corinfomax_covariance",
    "corinfomax_init_state",
    "corinfomax_split_views",
    "cross_correlation",
    "info_nce",
    "info_nce_per_sample",
    "mocov2",
    "mocov2_enqueue",
    "mocov2_init_queue",
    "mocov2_symmetric",
    "simclr",
    "simclr_per_sample",
    "simsiam",
    "simsiam_per_sample",
    "sinkhorn_knopp",
    "swav",
    "swav_from_scores",
    "vicreg",
    "vicreg_invariance_per_sample",
    "whiten",
    "wmse",
]
