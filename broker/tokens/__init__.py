"""Token counters: exact where a tokenizer is at hand, a labelled estimate otherwise.

``resolve.resolve()`` picks one counter; ``ftbroker.data.analysis.analyze`` runs any number of them over a dataset
in one pass. Every counter (``counters.TokenCounter``) has a stable ``key`` (``tiktoken:o200k_base``,
``hf:/abs/folder``, ``estimate:llama3``), a ``name`` for humans, ``exact``, and as fields the tokenizer ``family``
it counts for, its ``accuracy`` and ``why`` it is an estimate. ``count(example, fmt)`` returns ``(total, trained)``
for one parsed example: *total* is every token of the example as the route formats it, *trained* the tokens the
loss is taken on (assistant turns without ``weight: 0``, completions, preference outputs).

The modules: ``counters`` (the interface, and ``CounterGroup``: counters that share their work over a batch),
``walk`` (the texts and priced parts of an example under a chat rule), ``openai_encodings`` (tiktoken and
quicktok, exact), ``pool`` (the encoding threads), ``hf`` (a local Hugging Face tokenizer and its chat template,
exact), ``scripts`` and ``estimate`` (a tokenizer family's estimate, and which family a model is), ``resolve``.
"""
