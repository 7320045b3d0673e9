"""Import profiles: the parameters that decide which CID a given content gets."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Profile:
    name: str
    chunk_size: int
    max_links: int
    raw_leaves: bool
    hamt_rule: str | None  # "estimate" (Kubo <= 0.39), "block-bytes" (IPIP-499) or None (never)
    link_tsize_is_raw_size: bool = False  # actyx: a directory's link to a file carries the file size

    @property
    def hamt_threshold(self) -> int:
        return 262144


KUBO_V1 = Profile("kubo-v1", 262144, 174, raw_leaves=True, hamt_rule="estimate")
UNIXFS_V1_2025 = Profile("unixfs-v1-2025", 1048576, 1024, raw_leaves=True, hamt_rule="block-bytes")
ACTYX = Profile(
    "actyx", 262144, 174, raw_leaves=False, hamt_rule=None, link_tsize_is_raw_size=True
)

PROFILES = {p.name: p for p in (KUBO_V1, UNIXFS_V1_2025, ACTYX)}


def get_profile(name: str) -> Profile:
    try:
        return PROFILES[name]
    except KeyError:
        known = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {name!r} (known: {known})") from None
