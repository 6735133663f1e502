"""``DataError`` (defined with every user error in ``defectgen.errors``) and reading the data's text files."""
from pathlib import Path

from defectgen.errors import DataError

__all__ = ["DataError", "read_text"]


def read_text(path: Path) -> str:
    """A text file of the data (class names, split or stem lists); one that is not UTF-8 text is a ``DataError``."""
    try:
        return Path(path).read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}: {err.reason}); save it as UTF-8") from err
