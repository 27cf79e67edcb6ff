"""What one ``medfm serve`` process is configured with."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from medfm.errors import MedfmError, display_path
from medfm.models.registry import DEFAULT_ENCODER, DEFAULT_SEGMENTER
from medfm.paths import data_dir, default_catalog_url

#: Hosts that only this machine can reach: no token is needed there.
LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")
#: The browser workbench's static files, next to the package in the repository.
WEB_DIR = Path(__file__).resolve().parents[2] / "web"


@dataclass
class ServerSettings:
    """Where the server listens, what it serves and the limits it enforces.

    ``token`` is required from every client when ``host`` is not a loopback address.
    ``rate_per_second`` / ``rate_burst`` set each client's token bucket, generous enough
    for a person clicking fast and many scripted clients on one machine.
    ``image_cache_bytes`` bounds the images kept in memory, ``session_bytes`` the open
    segmentation sessions (each holds its image, label map and undo history).
    ``certfile`` / ``keyfile`` serve HTTPS.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    data_dir: Path = field(default_factory=data_dir)
    catalog_url: str = field(default_factory=default_catalog_url)
    token: str | None = None
    max_upload_bytes: int = 512 * 1024 * 1024
    rate_per_second: float = 50.0
    rate_burst: int = 200
    segmenter: str = DEFAULT_SEGMENTER
    encoder: str = DEFAULT_ENCODER
    segmenter_adapter: Path | None = None
    encoder_adapter: Path | None = None
    pacs_url: str | None = None
    web_dir: Path = WEB_DIR
    session_idle_seconds: float = 3600.0
    image_cache_bytes: int = 1024 * 1024 * 1024
    session_bytes: int = 1024 * 1024 * 1024
    certfile: Path | None = None
    keyfile: Path | None = None

    @property
    def token_required(self) -> bool:
        """Off loopback always; on loopback when the user gave a token (other users of the machine reach it too)."""
        return self.host not in LOOPBACK_HOSTS or self.token is not None

    @property
    def tls(self) -> bool:
        return self.certfile is not None


def attach_adapter(settings: ServerSettings, path: Path) -> None:
    """Serve with the adapter file ``path`` over the segmenter or the encoder, whichever it was made for
    (checked now, so that a wrong file stops the server before it starts)."""
    from medfm.models.adapters.file import read_adapter

    base = read_adapter(path, tensors=False)[1]["base_model"]
    if base == settings.segmenter:
        settings.segmenter_adapter = path
    elif base == settings.encoder:
        settings.encoder_adapter = path
    else:
        raise MedfmError(f"{display_path(path)}: an adapter for {base}; the server runs {settings.segmenter} and {settings.encoder}")
