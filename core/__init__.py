"""What every layer of Taleweaver shares, with no torch, transformers or discord in it.

The cogs, the preferences store and the config import this package and nothing from `model/`;
`model/` imports it; nothing here imports back up. So the bot can talk to a model service in
another process, and the cogs stay free of torch, by layout rather than by habit.

- `core.settings`: the decoding settings type, its ranges and the presets
- `core.service`: the model service's interface (requests, results, streams, stop reasons)
- `core.errors`: errors whose message is written for the user
- `core.prompts`: cleaning and checking untrusted prompts
- `core.bars`: the text bars of `/why`
- `core.config`: `config.yaml`, validated
"""
