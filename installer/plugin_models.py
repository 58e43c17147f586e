"""The Model dropdown's first table: the daemon's models, written beside each plug-in.

GIMP builds the plug-in's Model dropdown when it registers the plug-in, before any daemon is
asked, from `gimp-draggan-models.json` beside it (gimp_plugin/models.py: format, labels, and
the runs that keep it in step with the daemon). The installer writes the first one from the
installed daemon's `models list --json`; without a daemon here (--plugin-only, no
`gimp-draggan` on PATH) the dropdown offers the daemon's default until the first run.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Sequence
from pathlib import Path

import plugin_files
from actions import Actions

LIST_TIMEOUT_S = 120


def list_command(serve: Sequence[str]) -> list[str] | None:
    """`... serve [--bind ADDR]` -> `... models list --json`; None when there is no daemon."""
    if "serve" not in serve:
        return None
    return [*serve[: list(serve).index("serve")], "models", "list", "--json"]


def daemon_rows(serve: Sequence[str]) -> list[dict] | None:
    """The installed daemon's model rows, or None when it cannot tell (no daemon, it failed)."""
    argv = list_command(serve)
    if argv is None:
        return None
    try:
        done = subprocess.run(
            argv, capture_output=True, text=True, timeout=LIST_TIMEOUT_S, check=False
        )
        rows = json.loads(done.stdout)["models"] if done.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
        return None
    return rows if isinstance(rows, list) else None


def write_tables(actions: Actions, plugin_dirs: Sequence[Path], serve: Sequence[str]) -> None:
    """Write the dropdown's table into each plug-in folder, touching the entry file when it
    changed (left as it is when the daemon cannot list its models: a later run writes it)."""
    if not plugin_dirs:
        return
    if actions.dry_run:
        actions.say("would write the Model dropdown's table from the daemon's models")
        return
    rows = daemon_rows(serve)
    if rows is None:
        actions.say(
            "the daemon's models could not be listed here: the Model dropdown offers the "
            "daemon's default until the plug-in's first run"
        )
        return
    models = plugin_files.plugin_module("models")
    text = models.table_json(models.from_rows(rows))
    for plugin_dir in plugin_dirs:
        entry = plugin_dir / models.ENTRY_NAME
        if actions.write_file(plugin_dir / models.TABLE_NAME, text) and entry.is_file():
            os.utime(entry)  # GIMP registers a plug-in anew only when its file changed
