"""Fine-tuning datasets (JSON Lines): read once, checked line by line, counted by every token counter on the way.

``analysis.analyze(path, counters=..., limits=...)`` reads a file ONCE, in blocks, in constant memory whatever
its size, and returns a ``report.DatasetReport``; ``advice.advise(report, lora_r=..., epochs=...,
has_validation=...)`` gives advice lines. The modules: ``reader`` (the bounded one-pass reading of whole lines, and
what makes a file unreadable), ``rules`` (the formats and the core checks of a line), ``providers`` (the interface
a backend declares its provider's own line rules through, ``LineRules``), ``scan`` (one block: its lines checked,
its examples counted), ``issues`` (the tallies of what was found), ``analysis`` (``analyze``), ``report`` (the
``DatasetReport``) and ``advice``.
"""
