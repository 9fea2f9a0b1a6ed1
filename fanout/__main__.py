"""``python -m fanout``: the same as the ``fanout`` command.

A SIGTERM that arrives while the interpreter is still importing (a worker the supervisor has just
restarted, say) ends the process cleanly rather than by the signal; the commands install their own
handlers once they run.
"""

import signal
import sys


def _exit_cleanly(signum: int, frame: object) -> None:
    raise SystemExit(0)


signal.signal(signal.SIGTERM, _exit_cleanly)

from fanout.cli import main  # noqa: E402

sys.exit(main())
