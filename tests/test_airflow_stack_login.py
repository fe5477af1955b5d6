"""The Airflow stack's admin login command (deploy/airflow/stack.py), read back by Airflow's own
command-line parser: a generated password is taken whole, whatever characters it starts with."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from deploy.airflow import stack

# Airflow's parser, in a process of its own: importing Airflow reads AIRFLOW_HOME.
PARSE = """
import json, sys
from airflow.cli.cli_parser import get_parser
for argv in json.loads(sys.argv[1]):
    try:
        args = get_parser().parse_args(argv)
    except SystemExit:
        print(json.dumps(None))
        continue
    print(json.dumps({"password": args.password, "username": args.username, "role": args.role}))
"""


def test_airflow_reads_each_generated_password_whole(tmp_path):
    # secrets.token_urlsafe's alphabet: letters, digits, "-" and "_", at any position.
    passwords = ["-Ab3_xQ9", "--help", "_x-", "plainPassword1"]
    commands = [stack.admin_user_command(p) for p in passwords]
    assert {command[0] for command in commands} == {str(stack.AIRFLOW)}
    result = subprocess.run(
        [sys.executable, "-c", PARSE, json.dumps([command[1:] for command in commands])],
        env={**os.environ, "AIRFLOW_HOME": str(tmp_path)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    parsed = [json.loads(line) for line in result.stdout.strip().splitlines()[-len(passwords) :]]
    assert parsed == [
        {"password": p, "username": stack.ADMIN_USER, "role": "Admin"} for p in passwords
    ]
