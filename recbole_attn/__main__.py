"""``python -m recbole_attn``: the same command line as ``recbole-attn`` and ``run.py``."""
from recbole_attn.cli import main

raise SystemExit(main())
