"""Facts about this host's processes that outlive a pid (standard library only)."""

from __future__ import annotations

import tempfile
from pathlib import Path


def process_started(pid: int) -> str | None:
    """When process ``pid`` started (``/proc`` clock ticks since boot), or None when there is none.

    A pid alone may be used again by a later process; the pair (pid, start)
    names one process for as long as the host runs.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat[stat.rindex(")") + 2 :].split()[19]


def run_directory(controller_pid: int) -> Path:
    """The directory where one pytest run's workers share state (not created here).

    Named after the run's controller process (pid and start), so no two runs
    on this host ever share one.
    """
    started = process_started(controller_pid) or "0"
    return Path(tempfile.gettempdir()) / f"csv-pipeline-run-{controller_pid}-{started}"
