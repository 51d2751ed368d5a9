"""promptintern: PromptIntern (Zou et al., EMNLP 2024 Findings) as a library.

Pure Python, no Prefect: one module per concern (config, schedule, datasets, prompts, compress,
retrieve, shards, train, merge, generate, evaluate, report, artifacts). The Prefect tasks in
``tasks/`` and flows in ``flows/`` wrap it.
"""

__version__ = "0.1.0"
