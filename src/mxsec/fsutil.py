"""Creating mxsec's own directories with a fixed mode, whatever the process umask.

``os.makedirs(path, mode=…)`` applies the umask to the mode, and gives every *parent* it creates
``0o777 & ~umask``: under ``umask 000`` a state directory (databases, spill files, Maildir folders, lab
state) would come out world-writable, so any local user could swap a database or plant files in it.
:func:`make_dirs` creates each missing component itself and sets its mode with ``chmod`` afterwards.
Directories that already exist are left as they are (``/var/lib`` is not ours to change).
"""

from __future__ import annotations

import os
from pathlib import Path

#: Owner full access, group read and search, nobody else (``drwxr-x---``).
STATE_DIR_MODE = 0o750


def make_dirs(path: str | os.PathLike[str], mode: int = STATE_DIR_MODE) -> None:
    """Create *path* and its missing parents, each new directory with exactly *mode* (umask ignored).

    An existing directory is fine (and keeps its mode); an existing non-directory raises
    :class:`FileExistsError`, like :func:`os.makedirs`.
    """
    target = Path(os.path.abspath(os.fspath(path)))
    missing: list[Path] = []
    current = target
    while not current.is_dir():
        if current.exists() or current.is_symlink():
            raise FileExistsError(17, "exists and is not a directory", str(current))
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            os.mkdir(directory, mode)
        except FileExistsError:
            if not directory.is_dir():
                raise
            continue  # created meanwhile by another process: theirs, leave it
        os.chmod(directory, mode)
