"""The `tfx-template` command (cli/main.py)."""
