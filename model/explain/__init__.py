"""`/why`: which words of a prompt drive the model's next word (Guan et al., ICML 2019)."""
