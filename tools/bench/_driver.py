"""What the benchmark's two uvfs drivers share: mounted by module path, with a spec file
(a few bytes of JSON describing the tree) as their only source."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence

import uvfs


class SpecDriver(ABC):
    """A benchmark tree as a uvfs driver type: never detected (selected with ``-t
    tools.bench.MODULE:DRIVER``), it builds its filesystem from the spec it is given."""

    name: str
    description: str  # what ``uvfs info`` says

    @abstractmethod
    def filesystem(self, spec: bytes) -> uvfs.FileSystem:
        """The filesystem that `spec` (the source's bytes) describes."""

    def probe(self, head: bytes) -> bool:
        return False  # never detected: selected with -t

    async def open(
        self, sources: Sequence[uvfs.ImageFile], options: uvfs.MountOptions
    ) -> uvfs.FileSystem:
        spec = sources[0]
        return self.filesystem(await spec.read(0, spec.size))

    async def describe(self, sources: Sequence[uvfs.ImageFile]) -> str:
        return self.description
