"""Reading and rewriting the user's JSON files (plans, dataset.json) without losing what they held.

:func:`read_json` names the file in every error; :func:`write_json_with_backup` keeps a timestamped copy of the
previous content next to the file before it replaces it atomically.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)


def read_json(path: str, what: str = "file"):
    """The parsed content of ``path``; a missing file or invalid JSON is an error naming the file and the line."""
    if not os.path.isfile(path):
        raise MVExtError(f"{what} {path} does not exist.")
    with open(path, encoding="utf-8-sig") as f:
        text = f.read()
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise MVExtError(f"{what} {path} is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}. "
                         f"Fix the file (a trailing comma is a common cause).") from None


def backup_path(path: str) -> str:
    """``<path>.<YYYYmmdd-HHMMSS>[-N].bak``: a name not used yet."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    candidate, n = f"{path}.{stamp}.bak", 1
    while os.path.exists(candidate):
        candidate, n = f"{path}.{stamp}-{n}.bak", n + 1
    return candidate


def keep_backup(path: str) -> str | None:
    """Copy an existing file ``path`` to :func:`backup_path` before it is replaced; returns the backup (None: no
    file)."""
    if not os.path.isfile(path):
        return None
    backup = backup_path(path)
    shutil.copy2(path, backup)
    logger.info("kept the previous %s as %s", os.path.basename(path), backup)
    return backup


def write_json_with_backup(path: str, content, indent: int = 4) -> str | None:
    """Replace ``path`` by ``content``, first copying the old file to :func:`backup_path`. Returns the backup."""
    backup = keep_backup(path)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(content, f, indent=indent)
    os.replace(tmp, path)
    return backup
