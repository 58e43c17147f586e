"""The Model dropdown's first table: the daemon's models, written beside each plug-in.

GIMP builds the plug-in's Model dropdown when it registers the plug-in, before any daemon is
asked, from `gimp-draggan-models.json` beside it (gimp_plugin/models.py: format, labels, and
the runs that keep it in step with the daemon). The installer writes the first one from the
installed daemon's `models list --json`; without a daemon here (--plugin-only, no
`gimp-draggan` on PATH) the dropdown offers the daemon's default until the first run.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType

from actions import Actions

ROOT = Path(__file__).resolve().parent.parent
LIST_TIMEOUT_S = 120


def _models_module() -> ModuleType:
    """gimp_plugin/models.py, loaded by path (standard library only, like the installer)."""
    path = ROOT / "gimp_plugin" / "models.py"
    spec = importlib.util.spec_from_file_location("_gdg_plugin_models", path)
    if spec is None or spec.loader is None:
        raise RuntimeError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while being defined
    spec.loader.exec_module(module)
    return module


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
    """Write the dropdown's table into each plug-in folder (left as it is when the daemon
    cannot list its models: a later run of the plug-in writes it)."""
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
    models = _models_module()
    text = models.table_json(models.from_rows(rows))
    for plugin_dir in plugin_dirs:
        actions.write_file(plugin_dir / models.TABLE_NAME, text)
