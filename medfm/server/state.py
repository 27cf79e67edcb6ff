"""What one server process shares between requests, reached from a route through :func:`get_state`.

Models are created on first use and each is guarded by its own lock: segmenters and encoders keep
per-image state (the embedding of the current plane) and are not thread-safe. The search index
has a lock of its own, so that a search by an indexed image's stored embedding never waits for
a long encoder call (a classification).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from fastapi import Request

from medfm.catalog import Catalog, ImageRecord, open_catalog
from medfm.errors import FileError, MedfmError
from medfm.io import Image
from medfm.io.windowing import default_window, initial_window
from medfm.paths import catalog_index_dir
from medfm.server.annotations import AnnotationStore
from medfm.server.audit import AuditLog
from medfm.server.display import Display, first_content_frame
from medfm.server.errors import NotFound
from medfm.server.jobs import Jobs, OneAtATime, Progress
from medfm.server.reports import ReportStore
from medfm.server.seg_models import SegModels
from medfm.server.sessions import SessionStore
from medfm.server.settings import ServerSettings
from medfm.server.uploads import Uploads

if TYPE_CHECKING:
    from medfm.index import Index
    from medfm.io.dicom import DicomSeries
    from medfm.models.encoders import Encoder, EncoderInfo
    from medfm.models.grounding import TextGrounder
    from medfm.models.router import DomainRouter
    from medfm.models.segmenters import Segmenter

T = TypeVar("T")
#: Not looked up yet (``None`` is an answer: no grounding head or router for the encoder).
_UNSET = object()


@dataclass
class LoadedImage:
    """A catalog image read into memory; ``series`` is set for DICOM (a SEG references it)."""

    record: ImageRecord
    image: Image
    series: DicomSeries | None = None

    @cached_property
    def display(self) -> Display:
        return Display.of(self.image)

    @cached_property
    def initial_window(self) -> tuple[float, float, str]:
        """``(center, width, source)``: :func:`~medfm.io.windowing.initial_window`."""
        return initial_window(self.image)

    @cached_property
    def auto_window(self) -> tuple[float, float]:
        """The window from the image's values alone (:func:`~medfm.io.windowing.default_window`)."""
        center, width, source = self.initial_window
        return (center, width) if source == "auto" else default_window(self.image)

    @cached_property
    def first_frame(self) -> int:
        """Where a video starts: its first frame that is not blank."""
        return first_content_frame(self.image)

    @property
    def window(self) -> tuple[float, float]:
        return self.initial_window[:2]

    def view(self, axis: int) -> Display:
        """The display of the planes across voxel axis ``axis`` (2: the session's planes ``(k, t)``)."""
        return self.display if axis == 2 else Display.of(self.image, axis)

    @property
    def nbytes(self) -> int:
        return int(self.image.array.nbytes)


class ServerState:
    """Settings, catalog, models (and those trained here), jobs, sessions, annotations and saved reports of one server process."""

    def __init__(self, settings: ServerSettings) -> None:
        self.settings = settings
        self.data_dir: Path = Path(settings.data_dir).expanduser().resolve()
        self.catalog_url: str = settings.catalog_url
        self.catalog: Catalog = open_catalog(self.catalog_url)  # first: a catalog it cannot open leaves no data folder behind
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.jobs = Jobs(data_dir=self.data_dir)
        self.sessions = SessionStore(settings.session_idle_seconds, settings.session_bytes)
        self.annotations = AnnotationStore(self.data_dir / "annotations")
        self.annotations.remove_leftovers()  # of saves killed part-way, before anyone lists or saves
        self.reports = ReportStore(self.annotations.root)  # beside the annotations (its leftovers removed with theirs)
        self.seg_models = SegModels(self.data_dir / "models" / "seg", self.data_dir / "models" / "adapters", self.annotations.root,
                                    self.catalog_url, self.jobs, settings.segmenter)
        #: sampling jobs (POST /api/generate), one at a time: each takes every core for its run
        self.generation = OneAtATime(self.jobs, "a generation is already running (generator {label}); wait for it or cancel it")
        self.audit = AuditLog(self.data_dir / "logs")
        self.uploads = Uploads(self.data_dir / "uploads")
        self.uploads.remove_stale()
        #: held around every segmenter call, every encoder call and every index call: each model
        #: keeps per-image state and is not thread-safe (re-entrant: creating the model takes it too);
        #: whoever needs two takes encoder_lock before index_lock
        self.segmenter_lock = threading.RLock()
        self.encoder_lock = threading.RLock()
        self.index_lock = threading.RLock()
        self._segmenter: Segmenter | None = None
        self._encoder: Encoder | None = None
        self._grounder: TextGrounder | None | object = _UNSET
        self._router: DomainRouter | None | object = _UNSET
        self._index: Index | None = None
        #: images in memory, least recently used first, and their bytes (at most settings.image_cache_bytes)
        self._images: OrderedDict[int, LoadedImage] = OrderedDict()
        self._images_bytes = 0
        self._images_lock = threading.Lock()
        #: images in the search index, kept here so that /api/health never waits for a build
        self.index_size = self.count_indexed()

    @property
    def segmenter(self) -> Segmenter:
        """The promptable segmenter (settings.segmenter); call it only while holding ``segmenter_lock``."""
        with self.segmenter_lock:
            if self._segmenter is None:
                from medfm.models.registry import create_segmenter

                self._segmenter = create_segmenter(self.settings.segmenter, adapter=self.settings.segmenter_adapter)
            return self._segmenter

    def use_segmenter_adapter(self, name: str | None) -> dict[str, Any]:
        """Prompts segment from now on with the adapter ``name`` fine-tuned here over settings.segmenter, or with the
        base model (``None``), without a restart; the new segmenter is loaded (and the adapter checked against its
        base) before it replaces the one in use, so a refused adapter changes nothing."""
        from medfm.models.registry import create_segmenter

        path = None if name is None else self.seg_models.adapter_path(name)
        segmenter = create_segmenter(self.settings.segmenter, adapter=path)
        with self.segmenter_lock:  # after any prompt being answered: each answer comes from one model
            self._segmenter = segmenter
            self.settings.segmenter_adapter = path
        return self.segmenter_in_use()

    def segmenter_in_use(self) -> dict[str, Any]:
        """``{"name", "adapter"}``: the promptable segmenter and the adapter over it (its file's name without the suffix)."""
        adapter = self.settings.segmenter_adapter
        return {"name": self.settings.segmenter, "adapter": None if adapter is None else Path(adapter).stem}

    @property
    def encoder(self) -> Encoder:
        """The image-text encoder (settings.encoder); call it only while holding ``encoder_lock``."""
        with self.encoder_lock:
            if self._encoder is None:
                from medfm.models.registry import create_encoder

                self._encoder = create_encoder(self.settings.encoder, adapter=self.settings.encoder_adapter)
            return self._encoder

    @property
    def grounder(self) -> TextGrounder | None:
        """The grounding head shipped for the encoder's weights (``None``: text prompts use its class activation
        map); call it only while holding ``encoder_lock``."""
        with self.encoder_lock:
            if self._grounder is _UNSET:
                from medfm.models.registry import grounder_for

                self._grounder = grounder_for(self.encoder)
            return self._grounder

    @property
    def router(self) -> DomainRouter | None:
        """The domain router shipped for the encoder's weights (``None``: modality and region questions are zero-shot);
        call it only while holding ``encoder_lock``."""
        with self.encoder_lock:
            if self._router is _UNSET:
                from medfm.models.registry import router_for

                self._router = router_for(self.encoder)
            return self._router

    def encoder_info(self) -> EncoderInfo:
        """The encoder's name, size and weights, without waiting for a running encoder call (they never change)."""
        encoder = self._encoder
        return encoder.info if encoder is not None else self.encoder.info

    @property
    def index_dir(self) -> Path:
        """The search index of the catalog, one per encoder."""
        return catalog_index_dir(self.data_dir, self.settings.encoder)

    def index(self) -> Index | None:
        """The catalog's search index (``None`` before the first build), opened once: opening
        checks every file's sha256. Use it only while holding ``index_lock``."""
        with self.index_lock:
            if self._index is None and self.index_dir.exists():
                from medfm.index import open_index

                self._index = open_index(self.index_dir)
            return self._index

    def count_indexed(self) -> int:
        """How many images the search index holds (0 before the first build)."""
        index = self.index()
        return 0 if index is None else len(index)

    def update_index(self, progress: Progress) -> dict[str, int]:
        """Job work: embed every catalog image not yet in the search index."""
        from medfm.tasks.search import build_index

        with self.encoder_lock, self.index_lock:
            self._close_index()  # the build writes the index files: open them afresh afterwards
            report = build_index([], self.encoder, self.index_dir, catalog=self.catalog_url)
            self.index_size = self.count_indexed()
        total = report.added + report.skipped + len(report.bad)
        progress(total, total)
        # the bad files' paths may name patients: report only how many
        return {"added": report.added, "skipped": report.skipped, "failed": len(report.bad)}

    def index_new_images(self) -> str:
        """Queue :meth:`update_index` as a job (images were added); returns its id."""
        return self.jobs.submit("index", self.update_index)

    def load_image(self, image_id: int) -> LoadedImage:
        """The catalog image ``image_id`` in memory (cached); MedfmError if unknown or unreadable.

        The cache holds at most ``settings.image_cache_bytes`` of images, dropping the least
        recently used; an image larger than that is read for each request and never kept.
        """
        with self._images_lock:
            if image_id in self._images:
                self._images.move_to_end(image_id)
                return self._images[image_id]
        loaded = _read(self.record(image_id))
        limit = self.settings.image_cache_bytes
        with self._images_lock:
            if loaded.nbytes <= limit and image_id not in self._images:
                self._images[image_id] = loaded
                self._images_bytes += loaded.nbytes
                while self._images_bytes > limit:
                    _, dropped = self._images.popitem(last=False)
                    self._images_bytes -= dropped.nbytes
        return loaded

    def middle_plane(self, image_id: int) -> Image:
        """The middle plane of an image for its thumbnail: from the cache when it is there, else read alone."""
        from medfm.server.thumbnails import middle_plane

        with self._images_lock:
            cached = self._images.get(image_id)
        if cached is not None:
            shape = cached.image.shape
            k, t = shape[2] // 2, shape[3] // 2
            return cached.image.with_array(cached.image.array[:, :, k:k + 1, t:t + 1])
        record = self.record(image_id)
        return _reading(record, lambda: middle_plane(record))

    def memory(self) -> dict[str, dict[str, int]]:
        """Bytes held by the image cache and the sessions, their limits and how many each holds."""
        with self._images_lock:
            images = {"bytes": self._images_bytes, "limit": self.settings.image_cache_bytes, "count": len(self._images)}
        return {"image_cache": images, "sessions": self.sessions.usage()}

    def delete_image(self, image_id: int) -> None:
        """Remove an image from the catalog, the search index and memory; its saved annotations
        are set aside under ``<data_dir>/deleted/`` (never lost, never listed for a later image)."""
        from medfm.tasks.search import delete_images

        self.record(image_id)  # 404 for an unknown id
        with self.index_lock:
            index = self.index()
            delete_images(self.catalog, [image_id], [index] if index is not None else [])
            self.index_size = self.count_indexed()
        with self._images_lock:
            dropped = self._images.pop(image_id, None)
            if dropped is not None:
                self._images_bytes -= dropped.nbytes
        self.annotations.set_aside(image_id, self.data_dir / "deleted")

    def record(self, image_id: int) -> ImageRecord:
        """The catalog record of ``image_id``; NotFound if there is none."""
        try:
            return self.catalog.get(image_id)
        except MedfmError:
            raise NotFound(f"no image {image_id} in the catalog") from None

    def close(self) -> None:
        self.jobs.shutdown()
        self._close_index()
        self.catalog.close()
        self.audit.close()

    def _close_index(self) -> None:
        with self.index_lock:
            if self._index is not None:
                self._index.close()
                self._index = None


def _read(record: ImageRecord) -> LoadedImage:
    """Read a catalog record from exactly its own files; errors name the image, not its paths
    (they may name the patient)."""
    from medfm.catalog.loading import DICOM_FORMAT, load_record, record_series

    series = record_series(record) if record.format == DICOM_FORMAT else None
    return LoadedImage(record, load_record(record, series), series)


def _reading(record: ImageRecord, read: Callable[[], T]) -> T:
    """``read()`` of a catalog record; errors say what is wrong without the file's path (it may name the patient)."""
    try:
        return read()
    except FileError as exc:
        raise MedfmError(f"image {record.id} cannot be read: {exc.reason}") from None
    except OSError as exc:
        raise MedfmError(f"image {record.id} cannot be read: {exc.strerror or type(exc).__name__}") from None


def get_state(request: Request) -> ServerState:
    """FastAPI dependency: ``state: ServerState = Depends(get_state)``."""
    return request.app.state.medfm

