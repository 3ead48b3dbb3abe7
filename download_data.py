"""Download, unpack and verify the GLUE and SuperGLUE data sets (every task, or one) into the data root
(see fine_tune/tasks/download.py).

    python download_data.py [--data_root DIR] [--task {TASK,glue,superglue,all}] [--force]
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from fine_tune.tasks.download import main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(main())
