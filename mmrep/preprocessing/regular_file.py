"""Opening only regular files: the one check that image, audio and video reads share.

A path naming a named pipe (FIFO) would block the reading thread forever in `open`
until some writer appears; a device such as `/dev/zero` or `/dev/urandom` never ends,
so reading it whole exhausts memory; a folder or socket cannot be read at all. Each is
refused from `os.stat` before anything opens it, with an error that says what the path
is. `open_regular` also checks the opened descriptor (`os.fstat`), opened without
blocking, so a file swapped for a FIFO between the two steps is refused too.
"""

import errno
import os
import stat

_KINDS = (
    (stat.S_ISDIR, "a folder"),
    (stat.S_ISFIFO, "a named pipe (FIFO)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def _refusal(path, mode, error, what):
    kind = next((name for test, name in _KINDS if test(mode)), "not a regular file")
    return error(f"{what} {path!r} is {kind}, not a regular file; only regular files are read.")


def check_regular(path, error=ValueError, what="File"):
    """Returns `os.stat(path)` after checking that `path` names a regular file.

    Symbolic links are followed (a link to a regular file is one). Nothing is opened.

    Args:
        path: str or `os.PathLike`.
        error: the exception class raised for anything but a regular file (a module's
            own decode error, a `ValueError`). Defaults to `ValueError`.
        what: str. How the message names the path (`"Image file"`). Defaults to `"File"`.

    Returns:
        The `os.stat_result` of the file.

    Raises:
        FileNotFoundError: `path` does not exist (or is a dangling link).
        error: `path` is a folder, FIFO, device, socket or other non-regular file.
    """
    path = os.fspath(path)
    try:
        status = os.stat(path)
    except FileNotFoundError:
        raise FileNotFoundError(errno.ENOENT, f"No such {what.lower()}", path) from None
    if not stat.S_ISREG(status.st_mode):
        raise _refusal(path, status.st_mode, error, what)
    return status


def open_regular(path, error=ValueError, what="File"):
    """Opens a regular file for binary reading, refusing anything else before it blocks.

    `check_regular`, then `os.open(..., O_NONBLOCK)` (which returns at once even for a
    FIFO) and `os.fstat` of what was opened, so that the file read is the one checked.

    Args:
        path, error, what: as in `check_regular`.

    Returns:
        A binary file object (`io.BufferedReader`), to be closed by the caller.

    Raises:
        As `check_regular`, and `OSError` from opening (a permission problem).
    """
    path = os.fspath(path)
    check_regular(path, error, what)
    nonblocking = getattr(os, "O_NONBLOCK", 0)
    descriptor = os.open(path, os.O_RDONLY | nonblocking | getattr(os, "O_BINARY", 0))
    try:
        mode = os.fstat(descriptor).st_mode
        if not stat.S_ISREG(mode):
            raise _refusal(path, mode, error, what)
        if nonblocking:
            os.set_blocking(descriptor, True)
        return os.fdopen(descriptor, "rb")
    except BaseException:
        os.close(descriptor)
        raise
