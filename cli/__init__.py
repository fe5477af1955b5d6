"""The `tfx-template` command (cli/main.py) and the whole settings tree (cli/settings.py)."""
