"""``python -m recbole_attn.bench --models=AttnSeq,SASRec --budget=600 ...``"""
from recbole_attn.bench.cli import main

raise SystemExit(main())
