"""Sub-commands that talk to a node or run one (filled in as they land)."""

from __future__ import annotations

import argparse


def add_serve_command(sub: argparse._SubParsersAction) -> None:
    pass


def add_client_commands(sub: argparse._SubParsersAction) -> None:
    pass
