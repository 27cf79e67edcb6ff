"""What an attacker or an overloaded server tries: cross-site requests, memory, long requests,
weak tokens, odd cookies, bad numbers, leftovers of killed saves; and the audit log."""

from __future__ import annotations

import io
import json
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient

from medfm.errors import MedfmError
from medfm.server.app import create_app
from medfm.server.security import CLIENT_HEADER
from medfm.server.settings import ServerSettings
from servertools import make_client, make_data, wait_for_job

STRONG_TOKEN = "Zq3vX9kLm2Pw8RtY5nB7cD4fH6jK1sA0"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("hardening")
    return {"root": root, **make_data(root)}


def bare_client(data: dict, **settings) -> TestClient:
    """A client that sends no client header: what a cross-site form or no-cors fetch looks like."""
    return TestClient(create_app(ServerSettings(data_dir=data["root"], catalog_url=data["url"], **settings)),
                      base_url="http://127.0.0.1")


def png_bytes() -> bytes:
    from PIL import Image as PILImage

    buffer = io.BytesIO()
    PILImage.fromarray(np.full((12, 12), 99, np.uint8)).save(buffer, format="PNG")
    return buffer.getvalue()


# ---- 1. cross-site requests ------------------------------------------------------------------------

def test_changes_without_the_client_header_are_refused_and_store_nothing(data):
    uploads = Path(data["root"]) / "uploads"
    before = sorted(uploads.rglob("*")) if uploads.exists() else []
    with bare_client(data) as client:
        response = client.post("/api/uploads", files=[("files", ("x.png", png_bytes(), "image/png"))])
        assert response.status_code == 403 and CLIENT_HEADER in response.json()["detail"]
        assert client.post("/api/sessions", json={"image_id": data["disc"]}).status_code == 403
        assert client.post("/api/ingest", json={"path": "images"}).status_code == 403
        assert client.get("/api/images").status_code == 200  # reading needs no header
    assert (sorted(uploads.rglob("*")) if uploads.exists() else []) == before


@pytest.mark.parametrize("headers", [
    {"Origin": "http://evil.example"}, {"Origin": "null"}, {"Origin": "http://127.0.0.1:9"},
    {"Sec-Fetch-Site": "cross-site"}, {"Sec-Fetch-Site": "same-site"},
])
def test_changes_from_another_origin_are_refused_even_with_the_header(data, headers):
    with make_client(data["root"], data["url"]) as client:
        response = client.post("/api/sessions", json={"image_id": data["disc"]}, headers=headers)
        assert response.status_code == 403 and "cross-site" in response.json()["detail"]


def test_changes_from_the_workbench_itself_go_ahead(data):
    with make_client(data["root"], data["url"]) as client:
        same = {"Origin": "http://127.0.0.1", "Sec-Fetch-Site": "same-origin"}
        assert client.post("/api/sessions", json={"image_id": data["disc"]}, headers=same).status_code == 200


# ---- 3. memory bounded in bytes ---------------------------------------------------------------------

def image_bytes(data: dict) -> dict[str, int]:
    with make_client(data["root"], data["url"]) as client:
        state = client.app.state.medfm
        return {name: state.load_image(data[name]).nbytes for name in ("disc", "photo", "ct")}


def test_image_cache_holds_at_most_its_bytes_dropping_the_least_recently_used(data):
    size = image_bytes(data)
    assert size["photo"] <= size["ct"]
    limit = size["disc"] + size["ct"]
    with make_client(data["root"], data["url"], image_cache_bytes=limit) as client:
        for name in ("photo", "ct", "photo", "disc"):  # the photo is used again: the CT is least recent
            assert client.get(f"/api/images/{data[name]}/slice.png").status_code == 200
        cache = client.get("/api/health").json()["memory"]["image_cache"]
        assert cache == {"bytes": size["photo"] + size["disc"], "limit": limit, "count": 2}


def test_an_image_larger_than_the_cache_is_shown_but_not_kept(data):
    size = image_bytes(data)
    with make_client(data["root"], data["url"], image_cache_bytes=size["disc"] - 1) as client:
        assert client.get(f"/api/images/{data['disc']}/slice.png").status_code == 200
        assert client.get("/api/health").json()["memory"]["image_cache"]["bytes"] == 0


def test_sessions_hold_at_most_their_bytes_closing_the_least_recently_used(data):
    with make_client(data["root"], data["url"]) as client:
        first = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        one = client.get("/api/health").json()["memory"]["sessions"]["bytes"]
    assert one > 0
    with make_client(data["root"], data["url"], session_bytes=int(one * 1.5)) as client:
        first = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        second = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        assert client.get(f"/api/sessions/{first}/mask").status_code == 404
        assert client.get(f"/api/sessions/{second}/mask").status_code == 200
        sessions = client.get("/api/health").json()["memory"]["sessions"]
        assert sessions["count"] == 1 and sessions["bytes"] <= sessions["limit"] == int(one * 1.5)
    with make_client(data["root"], data["url"], session_bytes=1000) as client:
        response = client.post("/api/sessions", json={"image_id": data["disc"]})
        assert response.status_code == 400 and "MiB for a session" in response.json()["detail"]


def test_undo_history_gives_way_when_the_sessions_memory_is_full(data):
    with make_client(data["root"], data["url"]) as client:
        client.post("/api/sessions", json={"image_id": data["disc"]})
        empty = client.get("/api/health").json()["memory"]["sessions"]["bytes"]
    with make_client(data["root"], data["url"], session_bytes=empty + 3 * 48 * 48 * 2) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        for k in range(6):
            state = client.post(f"/api/sessions/{session}/prompts", json={"k": k, "points": [[24, 24]], "point_labels": [1]})
            assert state.status_code == 200
        sessions = client.get("/api/health").json()["memory"]["sessions"]
        assert sessions["count"] == 1 and sessions["bytes"] <= sessions["limit"]
        undone = 0
        while client.post(f"/api/sessions/{session}/undo").status_code == 200:
            undone += 1
        assert 0 < undone < 6  # the latest steps stay undoable; the oldest gave way


def test_thumbnails_do_not_read_whole_volumes(data, monkeypatch):
    from PIL import Image as PILImage

    from medfm.server.state import ServerState

    def whole_image(self, image_id):
        raise AssertionError("a thumbnail read the whole image")

    monkeypatch.setattr(ServerState, "load_image", whole_image)
    with make_client(data["root"], data["url"]) as client:
        for name in ("disc", "ct", "photo"):
            response = client.get(f"/api/images/{data[name]}/thumbnail.png")
            assert response.status_code == 200, (name, response.text)
            thumb = np.asarray(PILImage.open(io.BytesIO(response.content)))
            assert max(thumb.shape[:2]) <= 96 and thumb.max() > thumb.min(), name
        disc = np.asarray(PILImage.open(io.BytesIO(client.get(f"/api/images/{data['disc']}/thumbnail.png").content)))
        assert disc[disc.shape[0] // 2, disc.shape[1] // 2] == 255 and disc[0, 0] == 0  # the bright disc, centred


def test_a_video_thumbnail_is_its_middle_frame_decoded_alone(tmp_path, monkeypatch):
    from PIL import Image as PILImage

    import medfm
    from medfm.catalog import ingest
    from medfm.io import Image
    from medfm.server.state import ServerState

    frames = np.stack([np.full((32, 48, 3), 20 * t, np.uint8) for t in range(9)])  # (T, rows, columns, 3)
    (tmp_path / "videos").mkdir()
    medfm.save(Image(frames.transpose(2, 1, 0, 3)[:, :, None], metadata={"fps": 5.0}), tmp_path / "videos" / "clip.mp4")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest([tmp_path / "videos"], url, progress=False)
    monkeypatch.setattr(ServerState, "load_image", lambda self, image_id: pytest.fail("a thumbnail read the whole video"))
    with make_client(tmp_path, url) as client:
        (image,) = client.get("/api/images").json()["images"]
        thumb = np.asarray(PILImage.open(io.BytesIO(client.get(f"/api/images/{image['id']}/thumbnail.png").content)))
    assert max(thumb.shape[:2]) <= 96 and abs(float(thumb.mean()) - 80) < 6  # frame 4 of 9, not its neighbours (60, 100)


# ---- 4. bounded work per request -------------------------------------------------------------------

@pytest.mark.parametrize("path_body, field", [
    (("classify", {"labels": [f"label {n}" for n in range(2000)]}), "labels"),
    (("prompts", {"points": [[1, 1]] * 50_000, "point_labels": [1] * 50_000}), "points"),
    (("prompts", {"scribble": {"points": [[1, 1]] * 5000}}), "scribble.points"),
    (("prompts", {"points": [[1, 1]], "point_labels": [1], "label_name": "n" * 65}), "label_name"),
    (("prompts", {"points": [[1, 1]], "point_labels": [1], "color": "red; background: url(x)"}), "color"),
    (("labels", {"label": 1, "name": "x" * 1000}), "name"),
])
def test_requests_over_the_caps_are_refused_before_any_work(data, path_body, field):
    path, body = path_body
    with make_client(data["root"], data["url"]) as client:
        if path == "classify":
            response = client.post(f"/api/images/{data['disc']}/classify", json=body)
        else:
            session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
            response = client.post(f"/api/sessions/{session}/{path}", json=body)
        assert response.status_code == 400 and response.json()["detail"].startswith(f"{field}: "), response.text


def test_clicks_gathered_on_one_plane_are_capped(data):
    from medfm.server.limits import MAX_POINTS, MAX_POINTS_PER_PLANE

    with make_client(data["root"], data["url"]) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        body = {"points": [[20 + n % 8, 20 + n // 8] for n in range(MAX_POINTS)], "point_labels": [1] * MAX_POINTS}
        for _ in range(MAX_POINTS_PER_PLANE // MAX_POINTS):
            assert client.post(f"/api/sessions/{session}/prompts", json=body).status_code == 200
        response = client.post(f"/api/sessions/{session}/prompts", json=body)
        assert response.status_code == 400 and "undo some first" in response.json()["detail"]
        assert client.post(f"/api/sessions/{session}/prompts", json={**body, "k": 1}).status_code == 200


def test_a_search_answers_while_a_classification_holds_the_encoder(data):
    with make_client(data["root"], data["url"]) as client:
        assert wait_for_job(client, client.post("/api/index/build").json()["job"], timeout=300)["state"] == "done"
        encoder = client.app.state.medfm.encoder
        inside, release = threading.Event(), threading.Event()
        encode_text = encoder.encode_text

        def slow_encode_text(texts):  # a classification into very many labels
            inside.set()
            release.wait(60)
            return encode_text(texts)

        encoder.encode_text = slow_encode_text
        answers: dict[str, int] = {}
        classify = threading.Thread(target=lambda: answers.update(classify=client.post(
            f"/api/images/{data['disc']}/classify", json={"labels": ["bright", "dark"]}).status_code))
        search = threading.Thread(target=lambda: answers.update(search=client.get(
            "/api/search", params={"image_id": data["disc"], "k": 2}).status_code))
        try:
            classify.start()
            assert inside.wait(60)
            search.start()
            search.join(30)
            searched_meanwhile = not search.is_alive()
        finally:
            release.set()
            classify.join(60)
            search.join(60)
        assert searched_meanwhile, "the search waited for the classification"
        assert answers == {"search": 200, "classify": 200}


# ---- 5. token mode ---------------------------------------------------------------------------------

def test_other_applications_cookies_do_not_lock_the_user_out(data):
    with bare_client(data, host="0.0.0.0", token=STRONG_TOKEN) as client:
        cookie = 'prefs={"theme":"dark"}; other=a b; medfm_token=' + STRONG_TOKEN
        assert client.get("/api/images", headers={"Cookie": cookie}).status_code == 200
        assert client.get("/api/images", headers={"Cookie": 'prefs={"theme":"dark"}; medfm_token=wrong'}).status_code == 401


def test_a_token_given_to_a_loopback_server_is_enforced(data):
    with bare_client(data, token=STRONG_TOKEN) as client:
        assert client.get("/api/images").status_code == 401
        assert client.get("/api/images", headers={"Cookie": "medfm_token=" + STRONG_TOKEN}).status_code == 200
    with bare_client(data) as client:  # no token given: loopback stays open to this machine's user
        assert client.get("/api/images").status_code == 200


def test_the_cookie_is_secure_under_tls(data):
    for certfile, secure in ((Path("cert.pem"), True), (None, False)):
        keyfile = Path("key.pem") if certfile else None
        with bare_client(data, host="0.0.0.0", token=STRONG_TOKEN, certfile=certfile, keyfile=keyfile) as client:
            cookie = client.get("/", params={"token": STRONG_TOKEN}).headers["set-cookie"]
            assert ("; Secure" in cookie) is secure and "HttpOnly" in cookie


@pytest.mark.parametrize("token", ["s3cret", "password1234", "a" * 40, "0123456789abcdef"])
def test_weak_tokens_are_refused(token, tmp_path, monkeypatch):
    from medfm.server.serve import resolve_token

    monkeypatch.delenv("MEDFM_TOKEN", raising=False)
    settings = ServerSettings(host="0.0.0.0")
    with pytest.raises(MedfmError, match="too weak"):
        resolve_token(settings, token)
    (tmp_path / "token").write_text(token + "\n")
    with pytest.raises(MedfmError, match="too weak"):
        resolve_token(settings, None, tmp_path / "token")
    monkeypatch.setenv("MEDFM_TOKEN", token)
    with pytest.raises(MedfmError, match="too weak"):
        resolve_token(settings, None)


def test_a_token_comes_from_a_file_or_the_environment(tmp_path, monkeypatch):
    import secrets

    from medfm.server.serve import resolve_token

    monkeypatch.delenv("MEDFM_TOKEN", raising=False)
    settings = ServerSettings(host="0.0.0.0")
    (tmp_path / "token").write_text(f"{STRONG_TOKEN}\n")
    assert resolve_token(settings, None, tmp_path / "token") == STRONG_TOKEN
    assert resolve_token(settings, secrets.token_hex(16)) is not None
    monkeypatch.setenv("MEDFM_TOKEN", STRONG_TOKEN)
    assert resolve_token(settings, None) == STRONG_TOKEN
    monkeypatch.delenv("MEDFM_TOKEN")
    generated = resolve_token(settings, None)
    assert generated and len(generated) >= 22 and resolve_token(ServerSettings(), None) is None
    with pytest.raises(MedfmError, match="too weak"):  # a token given on loopback is checked: it must be strong too
        resolve_token(ServerSettings(), "weak")
    (tmp_path / "empty").write_text("\n")
    with pytest.raises(MedfmError, match="is empty"):
        resolve_token(settings, None, tmp_path / "empty")
    with pytest.raises(MedfmError, match="cannot read --token-file"):
        resolve_token(settings, None, tmp_path / "missing")


def test_the_printed_url_names_a_reachable_host():
    from medfm.server.serve import workbench_url

    for host in ("0.0.0.0", "::"):
        url = workbench_url(ServerSettings(host=host, token=STRONG_TOKEN))
        assert "0.0.0.0" not in url and "[::]" not in url and url.endswith(f"/?token={STRONG_TOKEN}")
    assert workbench_url(ServerSettings(host="10.1.2.3", token=STRONG_TOKEN, certfile=Path("c"), keyfile=Path("k"))).startswith(
        "https://10.1.2.3:8000/")


# ---- 6. audit log ----------------------------------------------------------------------------------

def audit_lines(root: Path) -> list[dict]:
    return [json.loads(line) for line in (root / "logs" / "audit.log").read_text().splitlines()]


def test_the_audit_log_says_who_asked_for_what_without_patient_values(tmp_path):
    root = tmp_path / "data"
    data = make_data(root)
    with bare_client({"root": root, "url": data["url"]}, host="0.0.0.0", token=STRONG_TOKEN) as client:
        auth = {"Authorization": f"Bearer {STRONG_TOKEN}"}
        client.get("/api/pacs/studies/1.2.840.99123/series", headers=auth)  # a study UID identifies a patient's study
        client.get("/api/images", params={"show_phi": "true", "text": "Doe"}, headers=auth)
        client.get(f"/api/images/{data['ct']}", headers=auth)
        client.get("/api/images")  # no token: refused, and logged
    lines = audit_lines(root)
    text = (root / "logs" / "audit.log").read_text()
    assert "Doe" not in text and "MRN-77123" not in text and STRONG_TOKEN not in text and str(root) not in text
    assert "1.2.840.99123" not in text and lines[-4]["path"] == "/api/pacs/studies/{study_uid}/series"
    phi, details, refused = lines[-3:]
    assert phi["path"] == "/api/images" and phi["show_phi"] is True and phi["params"] == ["show_phi", "text"]
    assert phi["token"] and phi["token"] == details["token"] and phi["client"] == "testclient" and phi["status"] == 200
    assert details["path"] == f"/api/images/{data['ct']}" and details["show_phi"] is False
    assert refused["status"] == 401 and refused["token"] is None


def test_the_catalog_text_filter_does_not_match_hidden_paths(tmp_path):
    from PIL import Image as PILImage

    from medfm.catalog import ingest

    folder = tmp_path / "images" / "Doe_Jane_MRN-77123"  # folder names often carry patient names
    folder.mkdir(parents=True)
    PILImage.fromarray(np.full((8, 8), 50, np.uint8)).save(folder / "scan.png")
    url = f"sqlite:///{tmp_path / 'catalog.db'}"
    ingest([tmp_path / "images"], url, progress=False)
    with make_client(tmp_path, url) as client:
        assert client.get("/api/images", params={"text": "MRN-77123"}).json()["images"] == []
        assert client.get("/api/images", params={"text": "Doe"}).json()["images"] == []
        assert [i["name"] for i in client.get("/api/images", params={"text": "SCAN"}).json()["images"]] == ["scan.png"]


# ---- 9. leftovers of killed saves --------------------------------------------------------------------

def test_leftovers_of_killed_saves_are_removed_at_start_and_numbers_do_not_skip(tmp_path):
    root = tmp_path / "data"
    data = make_data(root)
    with make_client(root, data["url"]) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        client.post(f"/api/sessions/{session}/prompts", json={"k": 0, "points": [[24, 24]], "point_labels": [1]})
        assert client.post(f"/api/sessions/{session}/save", json={"name": "liver"}).json()["version"] == 1
    folder = root / "annotations" / str(data["disc"]) / "liver"
    # what a save killed at each step leaves: a draft, a sidecar's temporary file, a claimed file without sidecar
    leftovers = [folder / ".draft-0a1b.nii.gz", folder / ".tmp-0a1b-v0002.json", folder / "v0002.nii.gz"]
    for path in leftovers:
        path.write_bytes(b"cut off")
    with make_client(root, data["url"]) as client:
        assert not [p for p in leftovers if p.exists()]
        assert (folder / "v0001.nii.gz").exists() and (folder / "v0001.json").exists()
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        client.post(f"/api/sessions/{session}/prompts", json={"k": 0, "points": [[24, 24]], "point_labels": [1]})
        assert client.post(f"/api/sessions/{session}/save", json={"name": "liver"}).json()["version"] == 2


def test_a_save_that_fails_after_claiming_its_number_gives_it_back(tmp_path, monkeypatch):
    from medfm.io import Image
    from medfm.server import annotations
    from medfm.server.annotations import AnnotationStore

    store = AnnotationStore(tmp_path)
    from medfm.provenance import Provenance

    labels = Image(np.ones((4, 4, 2), np.uint8), provenance=Provenance("segmentation", "test-model", None))
    assert store.save(1, "a", labels, "nifti", {"labels": {}})["version"] == 1
    write_json = annotations.write_json

    def full_disk(path, record):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(annotations, "write_json", full_disk)
    with pytest.raises(OSError):
        store.save(1, "a", labels, "nifti", {"labels": {}})
    monkeypatch.setattr(annotations, "write_json", write_json)
    assert store.save(1, "a", labels, "nifti", {"labels": {}})["version"] == 2


# ---- 10. input checks and headers --------------------------------------------------------------------

@pytest.mark.parametrize("params", [{"width": "nan"}, {"width": "inf"}, {"center": "nan"}, {"center": "-inf"}])
def test_non_finite_windows_are_refused(data, params):
    with make_client(data["root"], data["url"]) as client:
        response = client.get(f"/api/images/{data['disc']}/slice.png", params=params)
        assert response.status_code == 400 and "finite" in response.json()["detail"]


@pytest.mark.parametrize("body, says", [
    ({}, "needs points, a box or a scribble"),
    ({"points": [], "point_labels": []}, "needs points, a box or a scribble"),
    ({"label": True, "points": [[24, 24]], "point_labels": [1]}, "label: "),
    ({"label_name": "  ", "points": [[24, 24]], "point_labels": [1]}, "label_name: "),
    ({"points": [[24, 24]], "point_labels": [1, 0]}, "as many"),
    ({"box": [1, 2, 3, float("nan")]}, "box."),
])
def test_bad_prompts_are_refused(data, body, says):
    with make_client(data["root"], data["url"]) as client:
        session = client.post("/api/sessions", json={"image_id": data["disc"]}).json()["session"]
        response = client.post(f"/api/sessions/{session}/prompts", content=json.dumps(body),
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and says in response.json()["detail"], response.text


def test_nan_tolerance_and_empty_labels_are_refused(data):
    with make_client(data["root"], data["url"]) as client:
        body = '{"image_id": %d, "prediction": {"name": "a", "version": 1}, "reference": {"name": "a", "version": 1}, "tolerance_mm": NaN}'
        response = client.post("/api/evaluate/segmentation", content=body % data["disc"], headers={"Content-Type": "application/json"})
        assert response.status_code == 400 and response.json()["detail"].startswith("tolerance_mm: ")
        response = client.post(f"/api/images/{data['disc']}/classify", json={"labels": ["bright", " "]})
        assert response.status_code == 400 and "blank" in response.json()["detail"]


def test_every_response_carries_the_security_headers_errors_included(data):
    def check(response, status):
        assert response.status_code == status, response.text
        headers = response.headers
        assert "default-src 'self'" in headers["content-security-policy"], status
        assert headers["x-content-type-options"] == "nosniff" and headers["cross-origin-resource-policy"] == "same-origin", status

    with bare_client(data, host="0.0.0.0", token=STRONG_TOKEN) as client:
        check(client.get("/api/images"), 401)
    with make_client(data["root"], data["url"], max_upload_bytes=100, rate_per_second=0.001, rate_burst=6) as client:
        check(client.get("/api/health"), 200)
        check(client.get("/api/images/9999"), 404)
        check(client.get(f"/api/images/{data['disc']}/slice.png", params={"k": 99}), 400)
        check(client.get("/api/images", headers={"host": "evil.example"}), 403)
        check(client.post("/api/uploads", content=b"x" * 1000), 413)
        check(bare_client(data).post("/api/sessions", json={}), 403)
        for _ in range(3):
            client.get("/api/health")
        check(client.get("/api/health"), 429)


# ---- 11. rate limit per token ----------------------------------------------------------------------

def test_the_rate_limit_counts_per_token_where_there_is_one(data):
    auth = {"Authorization": f"Bearer {STRONG_TOKEN}"}
    app = create_app(ServerSettings(data_dir=data["root"], catalog_url=data["url"], host="0.0.0.0", token=STRONG_TOKEN,
                                    rate_per_second=0.001, rate_burst=3))
    with TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.1", 1000)) as first, \
            TestClient(app, base_url="http://127.0.0.1", client=("10.0.0.2", 1000)) as second:
        assert [first.get("/api/health", headers=auth).status_code for _ in range(3)] == [200] * 3
        assert second.get("/api/health", headers=auth).status_code == 429  # the same token from elsewhere
    app = create_app(ServerSettings(data_dir=data["root"], catalog_url=data["url"], rate_per_second=0.001, rate_burst=3))
    with TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.2", 1000)) as first, \
            TestClient(app, base_url="http://127.0.0.1", client=("127.0.0.3", 1000)) as second:
        assert [first.get("/api/health").status_code for _ in range(4)] == [200] * 3 + [429]
        # no token to count by: by address, and a made-up bearer token does not open a new bucket
        assert first.get("/api/health", headers={"Authorization": "Bearer made-up"}).status_code == 429
        assert second.get("/api/health").status_code == 200


def test_errors_name_the_servers_data_folder_as_such(tmp_path):
    from medfm.server.errors import client_message
    from medfm.server.jobs import Jobs

    data = tmp_path / "srv"
    data.mkdir()
    (tmp_path / "link").symlink_to(data)
    for folder in (data, tmp_path / "link"):
        message = client_message(f"{data.resolve()}/index: no indexed case has a caption\nsecond line", folder)
        assert message == "<server data>/index: no indexed case has a caption"
    assert client_message(f"{tmp_path}/other.png: cannot read", data) == f"{tmp_path}/other.png: cannot read"
    jobs = Jobs(workers=1, data_dir=data)

    def failing(_progress):
        raise MedfmError(f"{data}/models/x: already exists")

    job = jobs.submit("train", failing)
    for _ in range(200):
        if jobs.get(job)["state"] == "failed":
            break
        time.sleep(0.01)
    assert jobs.get(job)["error"] == "<server data>/models/x: already exists"
