"""fine_tune: fine-tune BERT/ALBERT teachers and distil them into small students.

Importing the package does nothing: no folders are created and no models are loaded.
The data flow is one line::

    files -> examples -> token batches -> (teacher, student) forward -> method losses
          -> one engine step -> checkpoints / logs -> sweep evaluation -> tables and submissions

See README.md for the layout of the sub-packages.
"""

__version__ = "0.1.0"
