"""`prefect worker start` for this project's deployments, stopping on one SIGTERM however it was started.

    python -m flows.worker --pool local       # any `prefect worker start` option may follow

Prefect's worker turns SIGTERM into SIGINT to stop gracefully; a process started in the background by a shell
(`cmd &`, scripts, some service managers) inherits SIGINT ignored, and then it never stops until a second SIGTERM
kills it. This restores SIGINT's default and runs the worker in the project's environment (telemetry off, the
libraries' state inside the project), which the flow runs it starts inherit.
"""

from __future__ import annotations

import os
import shutil
import signal
import sys
from pathlib import Path


def main() -> None:
    from lifecycle.runtime import configure_environment

    configure_environment()
    signal.signal(signal.SIGINT, signal.SIG_DFL)  # kept across exec: Python then installs its KeyboardInterrupt
    prefect = shutil.which("prefect", path=f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    if prefect is None:
        sys.exit("prefect: command not found next to this Python or on PATH")
    os.execv(prefect, [prefect, "worker", "start", *sys.argv[1:]])


if __name__ == "__main__":
    main()
