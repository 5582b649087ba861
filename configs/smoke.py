r"""A tiny run of the whole pipeline on synthetic data, for tests and a first try (CPU, < 2 min).

``--config=configs/smoke.py:<strategy>[,<ssl method>]``, e.g. ``configs/smoke.py:cromo,byol``.
Two tasks of two synthetic classes, a width-8 ResNet-18 at 16x16, a few epochs.
``configs/smoke.py:fussl,<ssl method>`` runs the FUSSL learner instead (one task of four classes).
``configs/smoke.py:online[,<ssl method>]`` runs the online learner instead: pre-training on the first
task, then a stream of 8 batches of the second, 3 local steps each, with a memory and RALS.
"""
from jaxcssl.config import apply_method, base_config


def get_config(arg: str = "cromo,barlow_twins"):
    strategy, _, method = arg.partition(",")
    c = base_config()
    c.dataset.name = "synthetic"
    c.dataset.source = "synthetic"
    c.dataset.synthetic.update(num_classes=4, train_per_class=64, test_per_class=16, image_size=16, seed=0)
    c.split.classes_per_task = (2, 2)
    apply_method(c, method or "barlow_twins")
    c.strategy.name = strategy or "cromo"
    c.strategy.samples_per_task = 16
    c.strategy.replay_batch = 8
    c.strategy.distill_hidden_dim = 32
    c.strategy.ewc.batches = 2
    c.model.width = 8
    c.model.head_scale = 1 / 64
    if c.ssl.method == "mocov2":
        c.ssl.options.queue_size = 64
    if c.ssl.method == "swav":
        c.ssl.options.num_prototypes = 16
    if c.ssl.method == "wmse":
        c.ssl.loss.whitening_size = 16
    if c.strategy.name == "kaizen":  # 10% of each class replayed (1% of 64 is none); its classifier scored as it is
        c.strategy.kaizen.replay_fraction = 0.1
        c.strategy.kaizen.replay_batch = 8
        c.eval.after_task = ("head", "knn")
        c.eval.final = ("head", "knn", "linear_fast")
    if c.ssl.method == "supervised":  # its trained classifier is scored too
        c.eval.final = ("knn", "linear", "head")
    c.train.batch_size = 32
    c.train.epochs = 3
    c.train.log_every_steps = 4
    c.train.checkpoint_every_steps = 5
    c.optim.base_batch = 32
    c.optim.warmup_epochs = 0
    c.eval.batch_size = 64
    c.eval.knn_k = 20
    c.eval.linear_epochs = 2
    c.eval.linear_batch_size = 32
    c.eval.fast_linear_epochs = 20
    if c.strategy.name == "fussl":
        fussl_smoke(c)
    if strategy == "online":
        c.learner.name = "online"
        c.online.update(stream_batch=16, steps_per_batch=3, pretrain_epochs=2, memory_size=64, rals_group_size=8,
                        eval_every_batches=4)
        c.train.log_every_steps = 3
        c.train.checkpoint_every_steps = 6
    return c


def fussl_smoke(c):
    """``configs/smoke.py:fussl,<objective>``: FUSSL on one task of the 4 synthetic classes, both phases."""
    c.learner.name = "fussl"
    c.strategy.name = "finetune"
    c.split.classes_per_task = (4,)
    c.model.norm = "batch"
    c.fussl.ensemble_size = 3
    # The paper's phase 1 (Adam, lr 0.2 then 0.001, weight decay 1e-6), its first epoch at 0.2.
    c.optim.update(name="adam", base_lr=0.2, base_batch=32, weight_decay=1e-6, warmup_epochs=0)
    c.fussl.phase1.drop_epochs = 1
    c.fussl.phase2.epochs = 4
    c.fussl.phase2.batch_size = 32
    if c.ssl.method == "wmse":
        c.ssl.loss.whitening_size = 32  # exceeds the 16 latents (1000 x head_scale)
    c.train.epochs = 4
    c.eval.after_task = ("knn", "linear_fast")
    c.eval.final = ("knn", "linear_fast")
