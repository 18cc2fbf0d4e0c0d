"""``python -m recbole_attn.bench``: every model through :func:`recbole_attn.run`
on one dataset under identical properties, measured and tabulated.

* :mod:`~recbole_attn.bench.suite` plans the rows (shared properties, per-model
  tweaks) and runs each in a fresh worker process;
* :mod:`~recbole_attn.bench.measure` is what the worker does: one run, its
  throughput and peak memory;
* :mod:`~recbole_attn.bench.report` and :mod:`~recbole_attn.bench.plots`
  write the JSON, Markdown, CSV and PNG files.

How to run it and what each number means: ``docs/benchmarks_howto.md``.
"""
