"""C kernels of Taleweaver's own, compiled on first use (`build.py`)."""
