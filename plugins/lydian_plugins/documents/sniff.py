"""Content sniffing (the name and declared type only break ties between text formats) and
the zip guard that runs before any Office parser sees an archive."""

from __future__ import annotations

import io
import zipfile

from .model import BadDocument, LimitExceeded, Limits, MiB, short

PDF = "application/pdf"
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"
CSV = "text/csv"
HTML = "text/html"
MARKDOWN = "text/markdown"
TEXT = "text/plain"

_OFFICE_PARTS = {"word/document.xml": DOCX, "xl/workbook.xml": XLSX, "ppt/presentation.xml": PPTX}
_BINARY_MAGIC = {
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"RIFF": "a RIFF (WebP/WAV/AVI) file",
    b"\x1f\x8b": "a gzip archive",
    b"7z\xbc\xaf": "a 7-Zip archive",
    b"Rar!": "a RAR archive",
    b"\xd0\xcf\x11\xe0": (
        "a legacy binary Office file (.doc/.xls/.ppt); save it as .docx/.xlsx/.pptx"
    ),
}


def sniff(data: bytes, media_type: str, filename: str) -> str:
    """The media type of ``data`` judged by its content; raises ``BadDocument`` if unsupported."""
    if not data:
        raise BadDocument("the file is empty")
    head = data[:1024]
    if b"%PDF-" in head:
        return PDF
    if data.startswith(b"PK\x03\x04") or data.startswith(b"PK\x05\x06"):
        return _office_kind(data)
    for magic, what in _BINARY_MAGIC.items():
        if data.startswith(magic):
            raise BadDocument(f"unsupported content: {what}, not a document")
    if b"\x00" in data[:8192] and not data.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise BadDocument("unsupported content: binary data that is no known document format")
    return _text_kind(decode_text(data)[:4096], media_type.lower(), filename.lower())


def _office_kind(data: bytes) -> str:
    try:
        names = set(zipfile.ZipFile(io.BytesIO(data)).namelist())
    except Exception as exc:  # BadZipFile, NotImplementedError (version), EOFError...
        raise BadDocument(f"corrupt or truncated zip archive (Office file): {short(exc)}") from None
    for part, kind in _OFFICE_PARTS.items():
        if part in names:
            return kind
    raise BadDocument("unsupported content: a zip archive that is not a DOCX, XLSX or PPTX file")


def _text_kind(sample: str, media_type: str, filename: str) -> str:
    start = sample.lstrip()[:200].lower()
    if start.startswith(("<!doctype html", "<html")) or ("<body" in sample.lower()):
        return HTML
    ext = filename.rsplit(".", 1)[-1] if "." in filename else ""
    if media_type.startswith(HTML) or ext in ("html", "htm"):
        return HTML if "<" in sample else TEXT
    if media_type.startswith((CSV, "text/tab-separated-values")) or ext in ("csv", "tsv"):
        return CSV
    if media_type.startswith(MARKDOWN) or ext in ("md", "markdown"):
        return MARKDOWN
    return TEXT


def decode_text(data: bytes) -> str:
    """Bytes to text: a BOM wins, then UTF-8, then Windows-1252 (which never fails)."""
    if data.startswith(b"\xef\xbb\xbf"):
        return data[3:].decode("utf-8", "replace")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return data.decode("utf-16", "replace")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("cp1252", "replace")


def check_zip(data: bytes, limits: Limits) -> None:
    """Refuses a zip bomb from its central directory, before anything is decompressed.

    ``zipfile`` never inflates an entry past its declared ``file_size`` (the read stops there
    and fails its CRC check), so bounding the declared sizes bounds the real ones.
    """
    try:
        infos = zipfile.ZipFile(io.BytesIO(data)).infolist()
    except Exception as exc:  # BadZipFile, NotImplementedError (version), EOFError...
        raise BadDocument(f"corrupt or truncated zip archive (Office file): {short(exc)}") from None
    if len(infos) > limits.max_zip_entries:
        raise LimitExceeded(
            "max_zip_entries",
            f"the archive has {len(infos):,} entries (limit {limits.max_zip_entries:,})",
        )
    total = 0
    for info in infos:
        total += info.file_size
        if info.file_size > MiB:
            ratio = info.file_size / max(info.compress_size, 1)
            if ratio > limits.max_zip_ratio:
                raise LimitExceeded(
                    "max_zip_ratio",
                    f"zip bomb: {info.filename} expands {ratio:,.0f}x "
                    f"({info.compress_size:,} to {info.file_size:,} bytes; "
                    f"limit {limits.max_zip_ratio:,.0f}x)",
                )
    if total > limits.max_unzipped_bytes:
        raise LimitExceeded(
            "max_unzipped_bytes",
            f"the archive expands to {total:,} bytes (limit {limits.max_unzipped_bytes:,})",
        )
