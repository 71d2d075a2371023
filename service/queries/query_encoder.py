"""Where the service's query encoder comes from, and its state for ``/readyz``.

- ``ConfiguredEncoder``: an injected encoder, or the ``query_encoder`` spec
  (``VSEARCH_QUERY_ENCODER``), loaded when the app is built. It wins: the
  registry refuses snapshots built with any other encoder.
- ``SnapshotEncoder`` (nothing configured, the default): the encoder the served
  snapshots were built with, derived from the manifest's ``encoder``
  (``vsearch.encoders.spec_for_info``) and loaded on the first image or text
  query, in a thread of its own, so that neither startup nor vector queries wait
  for it. What loads must have exactly the snapshot's identity (name, model_id,
  revision, dim: the registry's rule). When it cannot be loaded, image and text
  queries answer 400 ``no_encoder`` naming the encoder and how to point at it;
  vector and id queries go on. A failure stands until the process restarts: its
  remedies (a setting, ``HF_HOME``, a package) need a restart anyway. Snapshots of
  precomputed vectors (encoder ``precomputed``) have no encoder to load.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from service.errors import ApiError
from service.snapshots.refusal import NotReady
from service.snapshots.snapshot_loader import encoder_identity
from vsearch.encoders import load_encoder, load_hint, spec_for_info
from vsearch.encoders.encoder_base import Encoder, EncoderUnavailable
from vsearch.manifest import EncoderInfo
from vsearch.sources.precomputed import PRECOMPUTED

log = logging.getLogger(__name__)

# How long a query waits for the encoder it started loading before it is told to retry
# (the load goes on): inside HAProxy's 60 s, longer than loading from local files.
LOAD_WAIT_S = 30.0


def _identity(info: EncoderInfo) -> dict[str, Any]:
    return {"name": info.name, "model_id": info.model_id, "revision": info.revision}


class ConfiguredEncoder:
    """The injected encoder, or one built on first use from the ``query_encoder`` spec."""

    def __init__(self, injected: Encoder | None, spec: str) -> None:
        self.injected, self.spec = injected, spec
        self._encoder: Encoder | None = injected
        self.error: str | None = None
        self._lock = threading.Lock()

    def __call__(self) -> Encoder | None:
        if self._encoder is not None or not self.spec:
            return self._encoder
        with self._lock:
            if self._encoder is None:
                try:
                    self._encoder = load_encoder(self.spec)
                except ValueError as e:  # a malformed spec: as unavailable, with the reason
                    self.error = f"query_encoder={self.spec!r}: {e}"
                    raise EncoderUnavailable(self.error) from None
                except EncoderUnavailable as e:
                    self.error = str(e)
                    raise
                self.error = None
            return self._encoder

    def status(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "source": "injected" if self.injected is not None else "setting",
            "spec": self.spec or None,
        }
        encoder = self._encoder
        if encoder is not None:
            return {**body, "state": "ready", **_identity(encoder.info), "error": None}
        return {**body, "state": "unavailable" if self.error else "not_loaded", "error": self.error}


class SnapshotEncoder:
    """The encoder the served snapshots were built with; see the module docstring.

    ``expected`` returns the identity every served snapshot has
    (``SnapshotRegistry.expected_encoder``), None before the first one.
    """

    def __init__(
        self,
        expected: Callable[[], EncoderInfo | None],
        *,
        wait_s: float = LOAD_WAIT_S,
        load: Callable[[str], Encoder] = load_encoder,
    ) -> None:
        self._expected, self.wait_s, self._load_encoder = expected, wait_s, load
        self._lock = threading.Lock()
        self._target: EncoderInfo | None = None
        self._spec: str | None = None
        self._encoder: Encoder | None = None
        self._error: str | None = None  # why queries cannot be embedded (shown to callers)
        self._loading: threading.Event | None = None  # set once the load started has ended

    def _retarget(self) -> EncoderInfo | None:
        """The identity to serve, deriving its spec when it is new (under the lock)."""
        info = self._expected()
        target = self._target
        if info is None or (
            target is not None and encoder_identity(info) == encoder_identity(target)
        ):
            return target
        self._target, self._spec, self._encoder, self._loading = info, None, None, None
        self._error = None
        if info.name == PRECOMPUTED:
            self._error = (
                "the served snapshot holds precomputed vectors (encoder 'precomputed'): "
                "there is no encoder to embed images or text with; send a vector or an id"
            )
            return info
        try:
            self._spec = spec_for_info(info)
        except EncoderUnavailable as e:
            self._error = _missing(info, e.reason)
        return info

    def __call__(self) -> Encoder:
        with self._lock:
            info = self._retarget()
            if info is None:
                raise NotReady("no snapshot loaded yet")
            if self._encoder is not None:
                return self._encoder
            if self._error is not None:
                raise ApiError(400, "no_encoder", self._error)
            done, spec = self._loading, self._spec
            assert spec is not None
            if done is None:
                done = self._loading = threading.Event()
                threading.Thread(
                    target=self._load,
                    args=(info, spec, done),
                    name="vsearch-query-encoder",
                    daemon=True,
                ).start()
        done.wait(self.wait_s)
        with self._lock:
            if self._target is info and self._encoder is not None:
                return self._encoder
            if self._target is info and self._error is not None:
                raise ApiError(400, "no_encoder", self._error)
        raise ApiError(
            503,
            "encoder_loading",
            f"the query encoder {spec} is still loading; retry in a few seconds",
        )

    def _load(self, info: EncoderInfo, spec: str, done: threading.Event) -> None:
        started = time.perf_counter()
        encoder: Encoder | None = None
        try:
            loaded = self._load_encoder(spec)
        except Exception as e:  # unavailable weights, a broken package or file: all "cannot"
            if not isinstance(e, EncoderUnavailable | ValueError):
                log.exception("loading the query encoder %s failed", spec)
            # The encoder's own advice would name a spec of another identity: ours replaces it.
            reason = e.reason if isinstance(e, EncoderUnavailable) else str(e)
            error: str | None = _missing(info, reason or type(e).__name__)
        else:
            if encoder_identity(loaded.info) == encoder_identity(info):
                encoder, error = loaded, None
            else:
                got = loaded.info
                error = _missing(
                    info,
                    f"{spec} loads {got.name} (model_id {got.model_id}, revision "
                    f"{got.revision}, dim {got.dim}) instead",
                )
        with self._lock:
            if self._target is info:
                self._encoder, self._error = encoder, error
        if error is not None:
            log.error("%s", error)
        else:
            log.info("query encoder %s loaded in %.1fs", spec, time.perf_counter() - started)
        done.set()

    def status(self) -> dict[str, Any]:
        with self._lock:
            info = self._retarget()
            body: dict[str, Any] = {"source": "snapshot", "spec": self._spec}
            if info is None:
                return {**body, "state": "waiting_for_snapshot", "error": None}
            if info.name == PRECOMPUTED:
                state = "none"
            elif self._encoder is not None:
                state = "ready"
            elif self._error is not None:
                state = "unavailable"
            else:
                state = "loading" if self._loading is not None else "not_loaded"
            error = self._error if state == "unavailable" else None
            return {**body, "state": state, **_identity(info), "error": error}


def _missing(info: EncoderInfo, reason: str) -> str:
    return (
        f"image and text queries need the encoder the served snapshot was built with, "
        f"{info.name} (model_id {info.model_id}, revision {info.revision}), and it cannot be "
        f"loaded here: {reason.rstrip('.')}. To use it, {load_hint(info)}, and restart the "
        "service. Vector and id queries work meanwhile."
    )
