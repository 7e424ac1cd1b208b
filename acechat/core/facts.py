"""The facts of one incoming event an adapter hands the core: who asks (`Actor`) and what they attached.

The scope (platform, workspace, channel, thread) is `acechat.core.scope.Scope`.
"""

from __future__ import annotations

from dataclasses import dataclass

from acechat.core.permissions import Privilege


@dataclass(frozen=True, slots=True)
class Actor:
    """Who is asking, as the platform describes them.

    `privilege` is the platform's own verdict (Discord: Manage Channels here, Manage Server or
    Administrator; Slack: workspace admin or owner); an adapter that cannot tell reports MEMBER.
    """

    user_id: str
    display_name: str
    privilege: Privilege = Privilege.MEMBER


@dataclass(frozen=True, slots=True)
class Attachment:
    url: str
    filename: str
    content_type: str | None = None
    size: int | None = None
