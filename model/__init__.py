"""The language model: loading, decoding, generation and the in-process model service.

Two subpackages hold the other jobs: `model.explain` (`/why`: importance, words, attention,
charts) and `model.training` (offline: corpus, tokenizer, training, perplexity, model card).
Nothing here imports discord; the shared types live in `core`.
"""
