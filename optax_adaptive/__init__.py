"""Published adaptive optimizers as composable optax transformations."""

from optax_adaptive._src.acme import AcmeBranch, AcmeState, acme, acme_step
from optax_adaptive._src.adadiff import (
    ScaleByAdaDiffState,
    adadiff,
    scale_by_adadiff,
)
from optax_adaptive._src.adagrad_norm import (
    ScaleByAdaGradNormState,
    adagrad_norm,
    scale_by_adagrad_norm,
)
from optax_adaptive._src.adaloss import (
    ScaleByAdaLossState,
    adaloss,
    scale_by_adaloss,
)
from optax_adaptive._src.scale_free import (
    ScheduledWeightDecayState,
    adam_l2,
    adam_prox,
    adamw,
    add_decoupled_weight_decay,
    proximal_weight_decay,
)
from optax_adaptive._src.sgd_baselines import (
    ScaleByDecaySqrtState,
    scale_by_decay_sqrt,
    sgd_constant,
    sgd_decay_sqrt,
)

__version__ = '0.1.0'

__all__ = (
    'acme',
    'acme_step',
    'AcmeBranch',
    'AcmeState',
    'adadiff',
    'adagrad_norm',
    'adaloss',
    'adam_l2',
    'adam_prox',
    'adamw',
    'add_decoupled_weight_decay',
    'proximal_weight_decay',
    'scale_by_adadiff',
    'scale_by_adagrad_norm',
    'scale_by_adaloss',
    'scale_by_decay_sqrt',
    'ScaleByAdaDiffState',
    'ScaleByAdaGradNormState',
    'ScaleByAdaLossState',
    'ScaleByDecaySqrtState',
    'ScheduledWeightDecayState',
    'sgd_constant',
    'sgd_decay_sqrt',
)
