"""The workflows behind the training scripts: each takes the parsed flags, checks every input, prepares the
experiment folder and hands a model, a method and the data to the one engine (``fine_tune.engine.trainer``).

* ``start.py``: the experiment folder (config guard, resume or finished, ``--overwrite``)
* ``training.py``: tokenisation, collator, training forward and the engine run every workflow shares
* ``student.py``: a student built from flags, initialised from pretrained teacher layers, saved as a model folder
* ``fine_tune.py`` (``run_fine_tune.py``), ``offline_distill.py`` (``run_fine_tune_distill.py``),
  ``online_distill.py`` (the layer-wise scripts), ``layer_map.py`` (their heat-maps)
"""
