"""Which attachments go upstream as `references`, and what to tell the user about the rest."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath

from acechat.core.facts import Attachment

MAX_REFERENCES = 4
MAX_BYTES = 20 * 1024 * 1024
IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".gif", ".webp"})
DOCUMENT_EXTENSIONS = frozenset({".pdf", ".txt", ".md", ".csv", ".json"})


@dataclass(frozen=True, slots=True)
class AttachmentChoice:
    references: tuple[str, ...]
    skipped: tuple[str, ...]  # one short sentence per skipped file


def _kind(attachment: Attachment) -> str | None:
    content_type = (attachment.content_type or "").split(";")[0].strip().lower()
    suffix = PurePosixPath(attachment.filename.lower()).suffix
    if content_type.startswith("image/") or suffix in IMAGE_EXTENSIONS:
        return "image"
    if content_type in ("application/pdf", "application/json") or content_type.startswith("text/"):
        return "document"
    if suffix in DOCUMENT_EXTENSIONS:
        return "document"
    return None


def choose_references(attachments: Sequence[Attachment]) -> AttachmentChoice:
    references: list[str] = []
    skipped: list[str] = []
    for attachment in attachments:
        name = attachment.filename or "attachment"
        if not attachment.url.startswith("https://") and not attachment.url.startswith("http://"):
            skipped.append(f"{name}: it has no public link")
        elif _kind(attachment) is None:
            skipped.append(f"{name}: only images and text or PDF documents can be read")
        elif attachment.size is not None and attachment.size > MAX_BYTES:
            skipped.append(f"{name}: larger than {MAX_BYTES // (1024 * 1024)} MB")
        elif len(references) >= MAX_REFERENCES:
            skipped.append(f"{name}: at most {MAX_REFERENCES} attachments are read per question")
        else:
            references.append(attachment.url)
    return AttachmentChoice(tuple(references), tuple(skipped))
