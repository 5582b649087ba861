r"""Online SSL on CIFAR-100 (Table 1): ``--config=configs/online_cifar100.py:<objective>,<steps>[,<run>]``.

``<objective>``: barlow_twins or simclr (the paper's; any method runs, RALS needs a per-sample or
grouped loss); ``<steps>``: local steps per stream batch (10, 20, 50, 100); ``<run>``: ``ours``
(SLCLRS + memory + RALS, the default), ``norals``, ``cassle`` or ``offline`` (the continual baselines
at the same budget). CaSSLe's 5 tasks of 20 classes; see :mod:`jaxcssl.learners.online_presets`.
Table 2's memory sizes: ``--config.online.memory_size=2000`` (5000, 10000, 20000).
"""
from jaxcssl.learners.online_presets import from_arg


def get_config(arg: str = "barlow_twins,20"):
    return from_arg("cifar100", arg)
