"""optax_adaptive: published adaptive optimizers as composable optax transformations."""

from optax_adaptive._src.acme import acme
from optax_adaptive._src.acme import acme_step
from optax_adaptive._src.acme import AcmeBranch
from optax_adaptive._src.acme import AcmeState
from optax_adaptive._src.adadiff import adadiff
from optax_adaptive._src.adadiff import scale_by_adadiff
from optax_adaptive._src.adadiff import ScaleByAdaDiffState
from optax_adaptive._src.adagrad_norm import adagrad_norm
from optax_adaptive._src.adagrad_norm import scale_by_adagrad_norm
from optax_adaptive._src.adagrad_norm import ScaleByAdaGradNormState
from optax_adaptive._src.adaloss import adaloss
from optax_adaptive._src.adaloss import scale_by_adaloss
from optax_adaptive._src.adaloss import ScaleByAdaLossState
from optax_adaptive._src.scale_free import adam_l2
from optax_adaptive._src.scale_free import adam_prox
from optax_adaptive._src.scale_free import adamw
from optax_adaptive._src.scale_free import add_decoupled_weight_decay
from optax_adaptive._src.scale_free import proximal_weight_decay
from optax_adaptive._src.scale_free import ScheduledWeightDecayState
from optax_adaptive._src.sgd_baselines import scale_by_decay_sqrt
from optax_adaptive._src.sgd_baselines import ScaleByDecaySqrtState
from optax_adaptive._src.sgd_baselines import sgd_constant
from optax_adaptive._src.sgd_baselines import sgd_decay_sqrt

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
