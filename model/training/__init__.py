"""Offline training: corpus files, a BPE tokenizer, `Trainer` runs, perplexity and the model card.

Run as `python -m model.training --help`; the bot itself never imports this package.
"""
