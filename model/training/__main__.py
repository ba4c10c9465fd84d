"""`python -m model.training`: fine-tune or train a GPT-2-architecture model (see `model.training.train`)."""

from model.training.train import main

raise SystemExit(main())
