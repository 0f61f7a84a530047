"""Reading the user's CSV files (labels, groups, boxes, predictions) in the encodings a spreadsheet saves them in.

:func:`read_csv_rows` is the one reader of every CSV a user hands to ``nnunet-mvext``. The encoding is decided once,
from the bytes, and logged when it is not UTF-8:

1. a byte-order mark names it: UTF-8 (Excel's "CSV UTF-8"), UTF-16 LE/BE (Excel's "Unicode Text"), UTF-32 LE/BE;
2. without one, UTF-8 (ASCII included);
3. only if UTF-8 decoding fails, Windows-1252 (cp1252: Excel's plain "CSV" on a Western Windows; latin-1 text reads
   the same for every letter), with a log line saying so.

A file that none of these decodes (for example UTF-16 without a byte-order mark: NUL bytes), or that the csv module
cannot parse, is refused naming the file and the encoding found. Excel's "Unicode Text" separates columns by tabs: a
file whose first line holds a tab and no comma is read tab-separated (logged).
"""

from __future__ import annotations

import codecs
import csv
import io
import logging

from nnunet_mvext.errors import MVExtError

logger = logging.getLogger(__name__)

# longest first: the UTF-32 LE mark begins with the UTF-16 LE one
BYTE_ORDER_MARKS = ((codecs.BOM_UTF32_LE, "utf-32-le", "UTF-32 LE"), (codecs.BOM_UTF32_BE, "utf-32-be", "UTF-32 BE"),
                    (codecs.BOM_UTF8, "utf-8", "UTF-8"), (codecs.BOM_UTF16_LE, "utf-16-le", "UTF-16 LE"),
                    (codecs.BOM_UTF16_BE, "utf-16-be", "UTF-16 BE"))
SAVE_AS = "save it as 'CSV UTF-8' (Excel) or UTF-8 text"


def decode_text(data: bytes, path: str) -> str:
    """The text of a CSV file's bytes (see the module docstring for the encodings tried, in order)."""
    for mark, codec, name in BYTE_ORDER_MARKS:
        if data.startswith(mark):
            try:
                text = data[len(mark):].decode(codec)
            except UnicodeDecodeError as e:
                raise MVExtError(f"{path} starts with the {name} byte-order mark but is not valid {name} text (byte "
                                 f"{e.start}: {e.reason}); {SAVE_AS}.") from None
            if name != "UTF-8":
                logger.info("read %s as %s (byte-order mark)", path, name)
            return text
    if b"\x00" in data:
        raise MVExtError(f"{path} holds NUL bytes and no byte-order mark: UTF-16 or UTF-32 text without its mark, or "
                         f"not a text file; {SAVE_AS}.")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        utf8_error = f"byte 0x{data[e.start]:02x} at position {e.start}"
    try:
        text = data.decode("cp1252")
    except UnicodeDecodeError as e:
        raise MVExtError(f"{path} is neither UTF-8 ({utf8_error} is invalid) nor Windows-1252 text (byte "
                         f"0x{data[e.start]:02x} at position {e.start} is undefined there); {SAVE_AS}.") from None
    logger.info("read %s as Windows-1252 (cp1252): it is not valid UTF-8 (%s)", path, utf8_error)
    return text


def read_csv_rows(path: str) -> list[list[str]]:
    """Every row of the CSV file ``path`` as a list of cells (the caller checks that it exists and what it holds)."""
    with open(path, "rb") as f:
        text = decode_text(f.read(), path)
    first = next((line for line in text.splitlines() if line.strip()), "")
    delimiter = "\t" if "\t" in first and "," not in first else ","
    if delimiter == "\t":
        logger.info("read %s as tab-separated (its first line holds tabs and no comma)", path)
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as e:
        raise MVExtError(f"{path} cannot be read as CSV: {e}; {SAVE_AS}.") from None


def read_text_lines(path: str, what: str) -> list[str]:
    """The lines of a text file a user gives (a list of ids), decoded as :func:`decode_text` decodes; refuses a
    missing file, naming ``what`` (e.g. ``--test-patients file``)."""
    import os

    if not os.path.isfile(path):
        raise MVExtError(f"{what} {path} does not exist.")
    with open(path, "rb") as f:
        return decode_text(f.read(), path).splitlines()
