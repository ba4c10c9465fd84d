"""Everything about the language model. Importing this package must stay cheap and torch-free:
the cogs import `model.settings`, `model.errors` and `model.api`, never torch."""
