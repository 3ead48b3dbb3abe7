"""Models: sequence classifiers (teacher and student builders, classifier.py), student initialisation from pretrained
layers (init.py), the LAD gate blocks (gates.py), the padding-free BERT forward (padding_free.py) and its CPU
dropout (dropout.py)."""
