"""Train and evaluate one model the RecBole way; see recbole_attn/cli.py."""
import sys

from recbole_attn.cli import main

if __name__ == "__main__":
    sys.exit(main())
