"""Client commands: `add`, `name`, `get` against a running node."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    pass
