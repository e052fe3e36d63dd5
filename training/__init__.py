"""What training is made of besides the recipe (train_net.py) and its Module.fit wiring (fit.py).

- :mod:`training.checkpoint`: checkpoint names, atomic writes, the one reader of every
  ``.params`` / ``-symbol.json`` file (the original's included), cards, best and interrupted
  checkpoints, the prefix lock. Evaluation, export and the tools read checkpoints through it.
- :mod:`training.detection_module`: ``DetectionModule`` (non-finite guard, optimizer-state
  restore, validation), ``SignalGuard`` and the errors training raises.
- :mod:`training.callbacks`: ``Checkpointer``, the epoch-end callback that writes checkpoints.
- :mod:`training.weights`: where training's starting weights come from (``--resume``,
  ``--finetune``, ``--pretrained``, scratch) and which stay frozen.
"""
