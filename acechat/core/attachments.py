"""Which attachments go upstream (v2: `message` blocks; v1: `references`), and what to tell the user
about the rest."""

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
    # (block kind, url) in the order attached: "image_url" for images, "file_url" for documents.
    blocks: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]  # one short sentence per skipped file

    @property
    def references(self) -> tuple[str, ...]:
        return tuple(url for _, url in self.blocks)


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
    blocks: list[tuple[str, str]] = []
    skipped: list[str] = []
    private: list[str] = []
    for attachment in attachments:
        name = attachment.filename or "attachment"
        if not attachment.url.startswith("https://") and not attachment.url.startswith("http://"):
            private.append(name)
        elif (kind := _kind(attachment)) is None:
            skipped.append(f"{name}: only images and text or PDF documents can be read")
        elif attachment.size is not None and attachment.size > MAX_BYTES:
            skipped.append(f"{name}: larger than {MAX_BYTES // (1024 * 1024)} MB")
        elif len(blocks) >= MAX_REFERENCES:
            skipped.append(f"{name}: at most {MAX_REFERENCES} attachments are read per question")
        else:
            blocks.append(("image_url" if kind == "image" else "file_url", attachment.url))
    if private:
        # One line for all of them (Slack's files, say): the reason is the same for each.
        names = ", ".join(private[:3]) + (f" and {len(private) - 3} more" if len(private) > 3 else "")
        they = "it has" if len(private) == 1 else "they have"
        skipped.insert(
            0,
            f"{names}: {they} no public link the AI service could read, so files shared here are not passed on",
        )
    return AttachmentChoice(tuple(blocks), tuple(skipped))
