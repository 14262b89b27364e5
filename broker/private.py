"""ftbroker's own files are private to the user who runs it: the ledger (specs, errors, events), run folders (a
trainer's config, log, checkpoints and model), upload copies (a full copy of the training data) and logs. Folders
are made 0700 and files 0600 whatever the umask, and one left wider by an earlier version is narrowed where
ftbroker opens it. Only what this user owns is changed; nothing is ever made wider."""

from __future__ import annotations

import os
import stat
from pathlib import Path

FOLDER_MODE = 0o700
FILE_MODE = 0o600


def private_folder(path: Path) -> Path:
    """``path`` as a folder only its owner can enter: made 0700 (its missing parents as usual), else narrowed."""
    path.mkdir(mode=FOLDER_MODE, parents=True, exist_ok=True)
    narrow(path)
    return path


def private_file(path: Path) -> Path:
    """``path`` as a file only its owner can read: created empty 0600 if missing, else narrowed."""
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE))
    except FileExistsError:
        narrow(path)
    return path


def narrow(path: Path) -> None:
    """Remove the group's and others' permissions from ``path`` if this user owns it and it has any."""
    try:
        st = path.stat()
        if st.st_uid == os.getuid() and st.st_mode & 0o077:
            os.chmod(path, stat.S_IMODE(st.st_mode) & ~0o077)
    except OSError:  # gone, or not ours to change: left as it is
        pass
