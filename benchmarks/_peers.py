"""Which peer libraries are installed, and at which version.

A peer that is not installed (or that ``--without`` names) is skipped with a visible note; our
own rows always run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
from dataclasses import dataclass, field
from types import ModuleType

# distribution name -> import name
PEERS: dict[str, str] = {
    "tenacity": "tenacity",
    "stamina": "stamina",
    "backoff": "backoff",
    "pybreaker": "pybreaker",
    "aiobreaker": "aiobreaker",
    "purgatory": "purgatory",
    "circuitbreaker": "circuitbreaker",
    "pyresilience": "pyresilience",
    "aiolimiter": "aiolimiter",
    "limits": "limits",
}


@dataclass
class Peers:
    """The peers available to this run."""

    modules: dict[str, ModuleType] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)

    def get(self, dist: str) -> ModuleType | None:
        """Return the imported module of ``dist``, or ``None`` when it is unavailable."""
        return self.modules.get(dist)

    def label(self, dist: str) -> str:
        """Return ``"dist version"`` for table rows."""
        return f"{dist} {self.versions.get(dist, '?')}"


def load_peers(without: set[str]) -> Peers:
    """Import every peer not in ``without``; record why a peer is missing."""
    peers = Peers()
    for dist, module_name in PEERS.items():
        if dist in without or "all" in without:
            peers.missing[dist] = "excluded by --without"
            continue
        try:
            module = importlib.import_module(module_name)
        except ImportError as error:
            peers.missing[dist] = f"not installed ({error.__class__.__name__}); pip install '.[bench]'"
            continue
        peers.modules[dist] = module
        try:
            peers.versions[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            peers.versions[dist] = getattr(module, "__version__", "?")
    return peers
