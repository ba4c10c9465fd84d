"""Taleweaver's benchmarks: `python -m bench [--quick] [--only NAME]` (not part of the test run).

The environment is set here, before any benchmark imports transformers: no hub (the machines
have none), no progress bars, no tokenizer thread pool competing with the model for the cores.
"""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
