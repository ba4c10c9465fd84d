"""The model service as a Ray Serve application: `python -m model.serve` (see `model.serve.app`)."""
