"""One training per fold: the lock file every trainer of this package takes in its fold folder before nnU-Net writes.

Two ``nnUNetv2_train`` runs of the same dataset, trainer, plans, configuration and fold write the same
``checkpoint_*.pth``, ``validation/`` and ``progress.png``; without a lock both end with rc 0 and the folder holds a
mixture of the two. :func:`acquire_fold_lock` creates ``<fold folder>/`` :data:`LOCK_FILE_NAME`, a small JSON record
of the process that trains the fold (pid, host, its start-time token and boot id where the system exposes them, its
command line, the trainer, the time), and refuses (:class:`FoldLockedError`) while another live process holds it.

- **Atomic.** The record is written to a private temporary file and hard-linked to the lock name (``os.link`` fails
  when the name exists), so a reader never sees a half-written lock and of two processes started together exactly
  one wins. Where the file system has no hard links, ``O_CREAT | O_EXCL`` creates the file instead.
- **Stale locks** (a crashed or killed training) are taken over, with a note the trainer writes to its log: the pid
  is not alive (or a zombie), the machine restarted since (Linux boot id), or the pid now belongs to another process
  (Linux: the start time in ``/proc/<pid>/stat`` differs from the recorded one; the note names the command now
  running under that pid). Elsewhere the liveness of a pid is checked with ``os.kill(pid, 0)`` on POSIX systems only;
  where it cannot be checked (Windows, or a lock written on another host sharing the results folder) the lock counts
  as held and the message says how to override it. The stale file is renamed away before the new lock is linked, and
  the renamed file is compared with what was judged stale, so two processes taking over one stale lock cannot both
  succeed.
- **Same process.** A process that already holds the lock may take it again (a notebook or a test constructing the
  same fold's trainer twice); each acquisition has its own token and :meth:`FoldLock.release` removes the file only
  while it still holds that token.
- **Release.** :meth:`FoldLock.release` (idempotent); for every lock still held, at interpreter exit (``atexit``,
  which also runs after ``KeyboardInterrupt``/SIGINT and in ``-num_gpus`` spawn children) and on SIGTERM (a handler
  installed once, in the main thread, that releases this process's locks and then hands the signal to the handler
  that was there before, so the process still ends as before; forked children, such as nnU-Net's augmentation
  workers, get the previous handler back and never release their parent's lock). SIGKILL leaves the file behind: the
  next start recognises it as stale.
- **Override.** ``NNUNET_MVEXT_IGNORE_FOLD_LOCK=1`` (or true/yes/on) skips the check and leaves any existing lock
  file as it is; the returned lock holds nothing and its note says whose lock was ignored.
"""

from __future__ import annotations

import atexit
import datetime
import json
import os
import signal
import socket
import sys
import threading
import time
import uuid
from dataclasses import asdict, dataclass, field
from typing import Optional

from nnunet_mvext.errors import MVExtError

LOCK_FILE_NAME = "nnunet_mvext_fold.lock"
IGNORE_ENV = "NNUNET_MVEXT_IGNORE_FOLD_LOCK"
#: attempts at creating the lock while other processes take over or release it at the same moment
_ATTEMPTS = 5


class FoldLockedError(MVExtError):
    """Another live process trains this fold (or may: its liveness cannot be checked from here)."""


@dataclass
class LockRecord:
    """The content of a lock file: who holds it."""

    pid: int
    host: str
    token: str
    trainer: str = ""
    created: str = ""
    start_time: Optional[str] = None
    boot_id: Optional[str] = None
    cmdline: Optional[str] = None

    def describe(self) -> str:
        what = f"pid {self.pid}" + (f" on host {self.host}" if self.host != socket.gethostname() else "")
        details = [d for d in (self.trainer, f"since {self.created}" if self.created else "") if d]
        cmdline = self.cmdline if not self.cmdline or len(self.cmdline) <= 300 else self.cmdline[:297] + "..."
        return (what + (f" ({cmdline})" if cmdline else " (command line not readable)")
                + (f", {', '.join(details)}" if details else ""))


def _read_text(path: str) -> Optional[str]:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:
        return None


def _proc_stat(pid: int) -> Optional[list[str]]:
    """Fields 3.. of ``/proc/<pid>/stat`` (state first), or None where there is no such file."""
    text = _read_text(f"/proc/{pid}/stat")
    if not text or ")" not in text:
        return None
    return text[text.rindex(")") + 2:].split()


def boot_id() -> Optional[str]:
    """Linux's id of the current boot, or None elsewhere."""
    text = _read_text("/proc/sys/kernel/random/boot_id")
    return text.strip() if text else None


def process_start_time(pid: int) -> Optional[str]:
    """The start time of ``pid`` in clock ticks after boot (Linux, field 22 of ``/proc/<pid>/stat``), or None."""
    fields = _proc_stat(pid)
    return fields[19] if fields and len(fields) > 19 else None


def process_cmdline(pid: int) -> Optional[str]:
    """The command line of ``pid`` (Linux ``/proc``; this process: ``sys.argv``), or None where not readable."""
    text = _read_text(f"/proc/{pid}/cmdline")
    if text:
        return " ".join(part for part in text.split("\0") if part)
    if pid == os.getpid():
        return " ".join([sys.executable, *sys.argv])
    return None


def pid_alive(pid: int) -> Optional[bool]:
    """Whether ``pid`` runs on this machine (a zombie counts as ended); None where that cannot be checked."""
    if os.path.isdir("/proc/self"):
        fields = _proc_stat(pid)
        return fields is not None and fields[0] != "Z"
    if os.name != "posix":  # os.kill(pid, 0) would terminate the process on Windows
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return None
    return True


def _own_record(trainer: str) -> LockRecord:
    pid = os.getpid()
    return LockRecord(pid=pid, host=socket.gethostname(), token=uuid.uuid4().hex, trainer=trainer,
                      created=datetime.datetime.now().isoformat(timespec="seconds"),
                      start_time=process_start_time(pid), boot_id=boot_id(), cmdline=process_cmdline(pid))


def read_lock(path: str) -> Optional[LockRecord]:
    """The record in the lock file ``path``; None when there is none or it is not a lock record."""
    text = _read_text(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
        return LockRecord(**{k: data[k] for k in LockRecord.__dataclass_fields__ if k in data})
    except (ValueError, TypeError):
        return None


def staleness(record: LockRecord) -> tuple[Optional[str], bool]:
    """``(why stale or None, checkable)``: why ``record`` no longer belongs to a live training, if it does not.

    ``checkable`` is False where the holder's liveness cannot be determined from this process (another host, or no
    way to test a pid); such a lock counts as held.
    """
    if record.host != socket.gethostname():
        return None, False
    current_boot = boot_id()
    if record.boot_id and current_boot and record.boot_id != current_boot:
        return f"the machine restarted since pid {record.pid} took it", True
    alive = pid_alive(record.pid)
    if alive is None:
        return None, False
    if not alive:
        return f"pid {record.pid} is not alive", True
    now = process_start_time(record.pid)
    if record.start_time and now and now != record.start_time:
        running = process_cmdline(record.pid)
        return (f"pid {record.pid} now belongs to another process"
                + (f" ({running})" if running else "") + " started after the lock was taken"), True
    return None, True


@dataclass
class FoldLock:
    """A held (or, under the override, ignored) fold lock; :meth:`release` gives it back."""

    path: str
    record: Optional[LockRecord]
    notes: list = field(default_factory=list)
    #: folders that :func:`acquire_fold_lock` created for the lock, deepest first
    created_folders: list = field(default_factory=list)

    @property
    def held(self) -> bool:
        return self.record is not None

    def release(self, remove_created_folders: bool = False) -> bool:
        """Remove the lock file if it still holds this acquisition's token. Returns whether it was removed.

        ``remove_created_folders``: then also the folders the lock created, as far as they are empty (for a trainer
        whose construction failed, so that a refused start leaves no folder behind)."""
        if self.record is None or self.record.pid != os.getpid():  # a forked worker's copy releases nothing
            return False
        token, self.record = self.record.token, None
        _HELD.pop(id(self), None)
        current = read_lock(self.path)
        removed = False
        if current is not None and current.token == token:
            try:
                os.unlink(self.path)
                removed = True
            except FileNotFoundError:
                pass
        if remove_created_folders:
            for folder in self.created_folders:
                try:
                    os.rmdir(folder)
                except OSError:
                    break
        return removed


#: locks held by this process (id -> lock), released at exit and on SIGTERM
_HELD: dict = {}
_HANDLERS_INSTALLED = {"done": False}


def _release_all() -> None:
    """Release this process's locks (a forked child inherits the registry, but :meth:`FoldLock.release` only
    releases in the process that took the lock)."""
    for lock in list(_HELD.values()):
        lock.release()


def _on_sigterm(signum, frame, previous=None) -> None:
    _release_all()
    if callable(previous):
        previous(signum, frame)
    elif previous != signal.SIG_IGN:
        signal.signal(signum, signal.SIG_DFL)
        os.kill(os.getpid(), signum)


def _install_handlers() -> None:
    """atexit and SIGTERM handlers, once per process (SIGTERM only from the main thread, where Python allows it)."""
    if _HANDLERS_INSTALLED["done"]:
        return
    _HANDLERS_INSTALLED["done"] = True
    atexit.register(_release_all)
    if threading.current_thread() is not threading.main_thread() or not hasattr(signal, "SIGTERM"):
        return
    try:
        previous = signal.getsignal(signal.SIGTERM)
        signal.signal(signal.SIGTERM, lambda s, f: _on_sigterm(s, f, previous))
    except (ValueError, OSError):
        return
    if hasattr(os, "register_at_fork"):  # forked workers get the previous handler back: they hold no lock
        os.register_at_fork(after_in_child=lambda: _restore(previous))


def _restore(previous) -> None:
    try:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)
    except (ValueError, OSError):
        pass


def lock_ignored(environ: Optional[dict] = None) -> bool:
    """True when :data:`IGNORE_ENV` is set to 1/true/yes/on."""
    environ = os.environ if environ is None else environ
    return environ.get(IGNORE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def _link_record(path: str, record: LockRecord) -> bool:
    """Create ``path`` holding ``record`` atomically; False when ``path`` exists."""
    text = json.dumps(asdict(record), indent=1)
    temporary = f"{path}.{record.token}.tmp"
    with open(temporary, "w") as f:
        f.write(text)
    try:
        os.link(temporary, path)
        return True
    except FileExistsError:
        return False
    except OSError:  # no hard links on this file system
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            f.write(text)
        return True
    finally:
        os.unlink(temporary)


def _set_aside(path: str, raw: Optional[str]) -> bool:
    """Rename the stale lock ``path`` away and delete it, if it is still the one judged stale (``raw``)."""
    aside = f"{path}.{uuid.uuid4().hex}.stale"
    try:
        os.rename(path, aside)
    except FileNotFoundError:
        return False
    if _read_text(aside) != raw:  # replaced between reading and renaming: put the new lock back
        try:
            os.link(aside, path)
        except OSError:
            pass
        os.unlink(aside)
        return False
    os.unlink(aside)
    return True


def _refusal(folder: str, path: str, holder: LockRecord, checkable: bool) -> FoldLockedError:
    if checkable:
        why = "is being trained by another live process on this machine"
    elif holder.host != socket.gethostname():
        why = "is locked by a process on another host, whose state cannot be checked from here"
    else:
        why = "is locked by another process, whose state this system does not let us check"
    return FoldLockedError(
        f"Fold folder {folder} {why}: {holder.describe()}. Two trainings of one fold overwrite each other's "
        f"checkpoints, logs and validation. Wait for that process to end (or end it), train another fold, or, if no "
        f"training of this fold runs, delete {path} or set {IGNORE_ENV}=1.")


def acquire_fold_lock(folder: str, trainer: str = "") -> FoldLock:
    """Take the lock of the fold folder ``folder`` (created if missing) for this process, naming ``trainer``.

    Raises :class:`FoldLockedError` naming the holder (pid, command line) while another live process holds it; takes
    over a stale lock, with a note in :attr:`FoldLock.notes`. Under :data:`IGNORE_ENV` nothing is checked or written.
    """
    path = os.path.join(folder, LOCK_FILE_NAME)
    if lock_ignored():
        holder = read_lock(path)
        return FoldLock(path, None, [f"{IGNORE_ENV} is set: the fold lock was not checked"
                                     + (f" (the lock of {holder.describe()} in {path} is left as it is)" if holder
                                        else "") + "."])
    created, missing = [], os.path.abspath(folder)
    while not os.path.exists(missing):
        created.append(missing)
        missing = os.path.dirname(missing)
    os.makedirs(folder, exist_ok=True)
    record = _own_record(trainer)
    notes = []
    for _ in range(_ATTEMPTS):
        if _link_record(path, record):
            lock = FoldLock(path, record, notes, created)
            _install_handlers()
            _HELD[id(lock)] = lock
            return lock
        raw = _read_text(path)
        holder = read_lock(path)
        if holder is None:
            if raw is None:  # released meanwhile
                continue
            time.sleep(0.2)  # written by the O_EXCL fallback at this moment?
            if _read_text(path) != raw:
                continue
            why, checkable = "the lock file is not a lock record", True
        elif holder.pid == os.getpid() and holder.host == record.host and holder.start_time == record.start_time:
            why, checkable = "this process held it before", True
        else:
            why, checkable = staleness(holder)
        if why is None:
            raise _refusal(folder, path, holder, checkable)
        if _set_aside(path, raw):
            if holder is not None and holder.pid != os.getpid():
                notes.append(f"Took over the stale fold lock {path} of {holder.describe()}: {why}.")
            elif holder is None:
                notes.append(f"Replaced {path}: {why}.")
    raise FoldLockedError(f"Could not take the fold lock {path} in {_ATTEMPTS} attempts: other processes create and "
                          f"remove it at the same time. Start one training per fold.")
