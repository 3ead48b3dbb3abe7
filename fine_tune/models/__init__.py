"""Models: sequence classifiers, teacher and student builders (classifier.py) and what differs between model
families (families.py); the forward every loss reads (forward.py); student initialisation from pretrained layers
(init.py); the width projection (projection.py); the LAD gate blocks (gates.py); the padding-free BERT forward
(padding_free.py), its CPU dropout (dropout.py) and attention capture for other families (attention_capture.py)."""
