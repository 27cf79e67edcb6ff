"""The one progress bar: Rich's, on stderr, shown only when asked for and stderr is a terminal.

Library functions take ``progress: bool`` and the command line passes ``--progress/--no-progress``;
nothing is drawn into logs or pipes, where a bar would only be noise.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.progress import Progress


def progress_bar(enabled: bool) -> Progress:
    """A transient bar (it vanishes when done) to use as ``with progress_bar(show) as bar:``,
    then ``task = bar.add_task(description, total=n)`` and ``bar.advance(task)``; it draws
    nothing unless ``enabled`` and stderr is a terminal."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
        console=Console(stderr=True), transient=True, disable=not (enabled and sys.stderr.isatty()),
    )
