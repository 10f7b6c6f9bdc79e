"""The web app's API on the ASGI test client: every endpoint, with the bad inputs a browser or a script may send."""

from __future__ import annotations

import base64
import io
import json
import socket
from urllib.parse import urlsplit

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from PIL import Image

import xvit
from tests.app.conftest import MODEL, SLOW, make_client, noise_image, png, running_server, upload, wait
from xvit.app import Settings
from xvit.app.catalog import model_entries
from xvit.methods import METHODS
from xvit.methods.base import Attribution, Method
from xvit.params import Interval, Nullable, Options

# ------------------------------------------------------------------------------------------- page and guards


def test_page_static_files_and_security_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and "text/html" in r.headers["content-type"]
    assert '<script src="/static/app.js"' in r.text
    for path in ("/static/app.js", "/static/app.css", "/static/favicon.svg"):
        assert client.get(path).status_code == 200, path
    assert "default-src 'self'" in r.headers["content-security-policy"]
    assert r.headers["x-content-type-options"] == "nosniff"
    assert "access-control-allow-origin" not in client.get("/api/health", headers={"Origin": "http://evil"}).headers


@pytest.mark.parametrize("path", ["/static/../server.py", "/static/%2e%2e/server.py", "/docs", "/openapi.json",
                                  "/redoc", "/etc/passwd", "/static/../../../pyproject.toml"])
def test_nothing_is_served_outside_the_static_files(client, path):
    r = client.get(path)
    assert r.status_code == 404
    assert r.json()["error"]


def test_unknown_host_header_is_refused_as_json():
    with make_client(allowed_hosts=None) as c:  # accepts loopback names only; the test client says "testserver"
        r = c.get("/api/health")
    assert r.status_code == 400 and "Host" in r.json()["error"]


def test_internal_errors_are_json_without_traceback(monkeypatch):
    import xvit.app.server as server

    def boom():
        raise RuntimeError("secret detail")

    monkeypatch.setattr(server, "method_listing", boom)
    app = server.create_app(Settings(allowed_hosts=("testserver",)))
    with TestClient(app, raise_server_exceptions=False) as c:
        r = c.get("/api/methods")
    assert r.status_code == 500
    assert r.json()["error"].startswith("internal error (RuntimeError)")
    assert "secret detail" not in r.text and "Traceback" not in r.text


# ------------------------------------------------------------------------------------------------ listings


def test_health_and_config(client):
    health = client.get("/api/health").json()
    assert health["status"] == "ok" and health["version"] == xvit.__version__
    config = client.get("/api/config").json()
    assert config["workers"] == 1
    assert config["colormaps"]["diverging"]["name"] == "RdBu_r"
    assert len(config["colormaps"]["sequential"]["stops"]) == 11


def test_models_listing_offers_bundled_and_random_models_without_paths(tmp_path):
    from xvit.models import Preprocessing, bundled_models, create_vit, save_checkpoint

    torch.manual_seed(0)
    save_checkpoint(create_vit("nano", img_size=32, num_classes=3), tmp_path / "mine", preprocessing=Preprocessing(
        size=(32, 32)), class_names=["a", "b", "c"])
    (tmp_path / "not-a-checkpoint").mkdir()
    with make_client(allow_dirs=(tmp_path,)) as c:
        models = c.get("/api/models").json()["models"]
        ids = [m["id"] for m in models]
        assert "shapes-vit-tiny" in ids and MODEL in ids
        assert set(bundled_models()) <= set(ids) and "shapes-vit-tiny-svda" in ids
        assert "checkpoint:0:mine" in ids and not any("not-a-checkpoint" in i for i in ids)
        assert str(tmp_path) not in json.dumps(models)
        image = upload(c, noise_image())
        p = c.post("/api/predict", json={"model": "checkpoint:0:mine", "image": image["id"]}).json()
        assert p["num_classes"] == 3 and {t["name"] for t in p["top5"]} == {"a", "b", "c"}
        r = c.post("/api/predict", json={"model": str(tmp_path / "mine"), "image": image["id"]})
        assert r.status_code == 400 and "unknown model" in r.json()["error"]


def test_methods_listing_carries_every_parameter_constraint(client):
    methods = client.get("/api/methods").json()["methods"]
    assert set(methods) == set(xvit.methods())
    smooth = {p["name"]: p for p in methods["smoothgrad"]["params"]}
    assert smooth["n_samples"]["constraint"] == {"kind": "interval", "low": 1, "high": None, "closed": "both",
                                                 "integer": True, "description": "an int in the range [1, inf]"}
    assert smooth["stdevs"]["constraint"]["kind"] == "nullable"
    assert smooth["stdevs"]["constraint"]["inner"]["kind"] == "interval"
    assert smooth["base"]["constraint"]["values"] == ["saliency", "gradient", "input_x_gradient"]
    assert methods["attnlrp"]["signed"] is True and methods["rollout"]["signed"] is False


def test_a_newly_registered_method_appears_and_runs(client):
    class Toy(Method):
        """Toy map: the input's first channel."""

        name = "toy_app_method"
        signed = True
        class_specific = False
        resolution = "pixels"
        param_constraints = {"scale": Interval(0, None), "mode": Options(("a", "b")), "cap": Nullable(Interval(0, 1))}

        def __init__(self, *, scale: float = 1.0, mode: str = "a", cap: float | None = None) -> None:
            super().__init__(scale=scale, mode=mode, cap=cap)

        def attribute(self, ctx, x, targets):
            logits = ctx.adapter.forward(x).detach()
            chosen = logits.argmax(-1) if targets is None else targets
            return Attribution(x[:, 0] * self.params["scale"], logits, chosen)

    with METHODS.registered("toy_app_method", Toy, citation="test", passes="F"):
        _check_toy_method(client)


def _check_toy_method(client):
    listed = client.get("/api/methods").json()["methods"]["toy_app_method"]
    assert [p["name"] for p in listed["params"]] == ["scale", "mode", "cap"]
    assert listed["params"][2]["constraint"]["kind"] == "nullable"
    image = upload(client, noise_image())
    job = client.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]],
                                                 "methods": {"toy_app_method": {"scale": 2.0}}}).json()
    state = wait(client, job["id"])
    assert state["status"] == "done", state
    assert state["result"]["images"][0]["maps"]["toy_app_method"]["signed"] is True


def test_analyses_and_samples_listings(client):
    analyses = client.get("/api/analyses").json()["analyses"]
    assert set(analyses) == set(xvit.analyses())
    assert all("citation" in a and isinstance(a["params"], list) for a in analyses.values())
    samples = client.get("/api/samples").json()["samples"]
    assert samples and all("/" not in s["id"] for s in samples)
    r = client.get(f"/api/samples/{samples[0]['id']}/thumbnail.png")
    assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size[0] <= 160
    assert client.get("/api/samples/nope/thumbnail.png").status_code == 404


# ------------------------------------------------------------------------------------------------- uploads


def _exif_rotated_jpeg() -> bytes:
    image = noise_image(40, 20)
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees on display
    return png(image, "JPEG", exif=exif)


@pytest.mark.parametrize("data, mode, size", [
    (png(noise_image(30, 20).convert("L")), "L", (30, 20)),
    (png(noise_image(30, 20).convert("RGBA")), "RGBA", (30, 20)),
    (png(Image.fromarray(np.arange(600, dtype=np.uint16).reshape(20, 30) * 100)), "I;16", (30, 20)),
    (_exif_rotated_jpeg(), "RGB", (20, 40)),
])
def test_odd_images_are_accepted_as_the_cli_reads_them(client, data, mode, size):
    image = upload(client, data)
    assert image["mode"] == mode and (image["width"], image["height"]) == size
    thumb = client.get(image["thumbnail"])
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).mode == "RGB"
    p = client.post("/api/predict", json={"model": MODEL, "image": image["id"]})
    assert p.status_code == 200 and len(p.json()["top5"]) == 5


def test_several_files_in_one_upload(client):
    r = client.post("/api/images", files=[("a", ("a.png", png(noise_image(seed=1)), "image/png")),
                                          ("b", ("b.jpg", png(noise_image(seed=2), "JPEG"), "text/plain"))])
    assert r.status_code == 200 and [im["name"] for im in r.json()["images"]] == ["a.png", "b.jpg"]


def test_content_is_decoded_not_trusted(client):
    r = client.post("/api/images", files={"file": ("cat.png", b"\x89PNG\r\n\x1a\nnot really", "image/png")})
    assert r.status_code == 400 and "cat.png" in r.json()["error"]
    truncated = png(noise_image(64, 64))[:200]
    r = client.post("/api/images", files={"file": ("cut.png", truncated, "image/png")})
    assert r.status_code == 400 and "corrupt" in r.json()["error"]


def test_path_like_names_are_only_labels(client):
    image = upload(client, noise_image(), name="../../etc/passwd.png")
    assert image["name"] == "passwd.png"
    assert len(image["id"]) == 16 and all(ch in "0123456789abcdef" for ch in image["id"])
    image = upload(client, noise_image(), name="..\\..\\<script>.png")
    assert "/" not in image["name"] and "<" not in image["name"]


def test_too_many_pixels_is_413():
    with make_client(max_pixels=10_000) as c:
        r = c.post("/api/images", files={"file": ("big.png", png(noise_image(200, 100)), "image/png")})
    assert r.status_code == 413 and "20,000 pixels" in r.json()["error"] and "10,000" in r.json()["error"]


def test_too_many_bytes_is_413():
    with make_client(max_upload_bytes=5000) as c:
        r = c.post("/api/images", files={"file": ("big.png", png(noise_image(100, 100)), "image/png")})
    assert r.status_code == 413 and "larger than this server accepts" in r.json()["error"]


def test_malformed_multipart_and_empty_uploads_are_400(client):
    r = client.post("/api/images", content=b"--xyz\r\nContent-Disposition: form-data; name=\"f\"; filename=\"a\"\r\n",
                    headers={"Content-Type": "multipart/form-data; boundary=xyz"})
    assert r.status_code == 400 and r.json()["error"]
    r = client.post("/api/images", data={"field": "value"})
    assert r.status_code == 400 and "no files" in r.json()["error"]
    r = client.post("/api/images", content=b"{}", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_a_stalled_upload_is_408():
    head = (b"POST /api/images HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: multipart/form-data; boundary=b\r\n"
            b"Content-Length: 1000\r\n\r\n--b\r\n")
    with running_server(body_timeout_s=0.3) as url, socket.create_connection(
            (urlsplit(url).hostname, urlsplit(url).port), timeout=10) as conn:
        conn.sendall(head)  # and then nothing more
        reply = b""
        while b"stopped arriving" not in reply and (chunk := conn.recv(4096)):  # headers and body may come apart
            reply += chunk
        reply = reply.decode()
    assert reply.startswith("HTTP/1.1 408") and "stopped arriving" in reply


def test_samples_are_used_by_id(client):
    sample = client.get("/api/samples").json()["samples"][0]
    image = client.post("/api/images/sample", json={"sample": sample["id"]}).json()["images"][0]
    assert image["name"] == sample["id"] and image["label"] == sample["label"]
    r = client.post("/api/images/sample", json={"sample": "../../pyproject.toml"})
    assert r.status_code == 404


# --------------------------------------------------------------------------------------------- predict, jobs


def test_predict(client):
    image = upload(client, noise_image())
    p = client.post("/api/predict", json={"model": "shapes-vit-tiny", "image": image["id"]}).json()
    probs = [c["probability"] for c in p["top5"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1.0 + 1e-6
    assert p["input_size"] == [112, 112] and p["num_classes"] == 10
    assert client.post("/api/predict", json={"model": "nope", "image": image["id"]}).status_code == 400
    r = client.post("/api/predict", json={"model": MODEL, "image": "0123456789abcdef"})
    assert r.status_code == 404 and "Upload it again" in r.json()["error"]
    assert client.post("/api/predict", json={"model": MODEL}).status_code == 422


def test_explain_two_methods_matches_the_library_and_downloads(client):
    sample = client.post("/api/images/sample", json={"sample": "single_00"}).json()["images"][0]
    job = client.post("/api/jobs/explain", json={
        "model": "shapes-vit-tiny", "images": [sample["id"]], "target": 3,
        "methods": {"gradcam": {}, "attnlrp": {"conv_gamma": 0.25}}})
    assert job.status_code == 202 and job.json()["status"] in ("queued", "running")
    state = wait(client, job.json()["id"])
    assert state["status"] == "done", state
    result = state["result"]
    image = result["images"][0]
    assert set(image["maps"]) == {"gradcam", "attnlrp"}
    assert image["record"]["methods"]["attnlrp"]["target"]["index"] == 3
    assert image["record"]["methods"]["gradcam"]["seconds_per_image"] > 0
    assert result["methods"]["attnlrp"]["params"]["conv_gamma"] == 0.25

    model = xvit.load_model("shapes-vit-tiny")
    x, _ = xvit.load_images([xvit.models.ASSETS / "samples/single/single_00.png"], model)
    for method, params in (("gradcam", {}), ("attnlrp", {"conv_gamma": 0.25})):
        expected = xvit.explain(model, x, method=method, target=3, **params).raw[0, 0]
        m = image["maps"][method]
        values = np.frombuffer(base64.b64decode(m["values"]), dtype="<f4").reshape(m["shape"])
        np.testing.assert_allclose(values, expected.numpy(), rtol=1e-4, atol=1e-6)
    assert image["maps"]["attnlrp"]["signed"] and image["maps"]["attnlrp"]["scale"]["low"] < 0

    for url in (image["display"], image["maps"]["gradcam"]["heat"], image["maps"]["attnlrp"]["overlay"] + "?alpha=0.8"):
        r = client.get(url)
        assert r.status_code == 200 and Image.open(io.BytesIO(r.content)).size == (112, 112), url
    r = client.get(image["maps"]["attnlrp"]["overlay"])
    assert r.headers["content-disposition"].startswith("attachment; filename=\"xvit-")
    assert client.get(image["maps"]["attnlrp"]["overlay"] + "?alpha=2").status_code == 422
    assert client.get(f"/api/jobs/{job.json()['id']}/overlay/0/rollout.png").status_code == 404
    assert client.get(f"/api/jobs/{job.json()['id']}/heat/5/gradcam.png").status_code == 404
    assert client.get(f"/api/jobs/{job.json()['id']}/figure.png").status_code == 404

    r = client.get(result["download"])
    assert r.status_code == 200 and "attachment" in r.headers["content-disposition"]
    full = r.json()
    assert full["model"] == "shapes-vit-tiny" and full["methods"]["attnlrp"]["signed"] is True
    assert np.asarray(full["images"][0]["raw_maps"]["gradcam"]).shape == tuple(image["maps"]["gradcam"]["shape"])


def test_events_stream_progress_and_the_result(client):
    image = upload(client, noise_image())
    job = client.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]],
                                                 "methods": {"gradcam": {}, "input_x_gradient": {}}}).json()
    events = []
    with client.stream("GET", f"/api/jobs/{job['id']}/events") as stream:
        assert stream.headers["content-type"].startswith("text/event-stream")
        for line in stream.iter_lines():
            if line.startswith("event: "):
                events.append(line[7:])
            if line.startswith("data: ") and events[-1] == "end":
                final = json.loads(line[6:])
    assert events[-1] == "end" and final["status"] == "done" and "result" in final


@pytest.mark.parametrize("body, status, needle", [
    ({"methods": {"rolout": {}}}, 400, "Did you mean 'rollout'"),
    ({"methods": {"rollout": {"head_fusion": "avg"}}}, 422, "'head_fusion' parameter of rollout must be one of"),
    ({"methods": {"rollout": {"nope": 1}}}, 422, "unexpected parameter 'nope'"),
    ({"methods": {"integrated_gradients": {"n_steps": 0}}}, 422, "n_steps"),
    ({"methods": {}}, 422, "methods"),
    ({"methods": {"rollout": {}}, "target": -1}, 422, "target"),
    ({"methods": {"rollout": {}}, "extra": 1}, 422, "extra"),
    ({"methods": {"rollout": {}}, "model": "/etc"}, 400, "unknown model"),
    ({"methods": {"rollout": {}}, "images": ["0123456789abcdef"]}, 404, "no image"),
    ({"methods": {m: {} for m in list(xvit.methods())[:9]}}, 422, "at most 8 methods"),
])
def test_explain_rejects_bad_requests_with_a_message(client, body, status, needle):
    image = upload(client, noise_image())
    r = client.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], **body})
    assert r.status_code == status, r.text
    assert needle in r.json()["error"]


def test_a_target_out_of_range_fails_the_job_with_a_message(client):
    image = upload(client, noise_image())
    job = client.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], "target": 5000,
                                                 "methods": {"gradcam": {}}}).json()
    state = wait(client, job["id"])
    assert state["status"] == "error" and "5000" in state["message"]
    assert client.get(f"/api/jobs/{job['id']}/result.json").status_code == 409


def test_analysis_job(client):
    name = next(iter(xvit.analyses()))
    image = upload(client, noise_image())
    job = client.post("/api/jobs/analysis", json={"model": MODEL, "images": [image["id"]], "analysis": name})
    assert job.status_code == 202
    state = wait(client, job.json()["id"])
    assert state["status"] == "done", state
    result = state["result"]
    assert result["name"] == name and result["tensors"] and result["meta"]["definition_version"]
    fig = client.get(result["figure"])
    assert fig.status_code == 200 and Image.open(io.BytesIO(fig.content)).format == "PNG"
    full = client.get(result["download"]).json()
    assert full["name"] == name and set(full["tensors"]) == set(result["tensors"])
    assert client.get(f"/api/jobs/{job.json()['id']}/images/0.png").status_code == 404
    bad = client.post("/api/jobs/analysis", json={"model": MODEL, "images": [image["id"]], "analysis": "nope"})
    assert bad.status_code == 400 and "unknown analysis" in bad.json()["error"]
    bad = client.post("/api/jobs/analysis", json={"model": MODEL, "images": [image["id"]], "analysis": name,
                                                  "params": {"nope": 1}})
    assert bad.status_code == 422 and "unexpected parameter" in bad.json()["error"]


def test_guide_lists_its_boxes_and_runs_with_drawn_boxes(client):
    guide = {p["name"]: p for p in client.get("/api/analyses").json()["analyses"]["guide"]["params"]}
    assert guide["boxes"]["default"] is None
    assert guide["boxes"]["constraint"]["kind"] == "nullable"
    assert guide["boxes"]["constraint"]["inner"]["kind"] == "boxes"
    image = upload(client, noise_image())
    boxes = [[0.1, 0.2, 0.6, 0.9], [0.5, 0.0, 1.0, 0.5]]
    job = client.post("/api/jobs/analysis", json={"model": MODEL, "images": [image["id"]], "analysis": "guide",
                                                  "params": {"boxes": boxes}})
    assert job.status_code == 202, job.text
    state = wait(client, job.json()["id"])
    assert state["status"] == "done", state
    assert state["result"]["tensors"]["coverage"]["shape"][1] == 2
    bad = client.post("/api/jobs/analysis", json={"model": MODEL, "images": [image["id"]], "analysis": "guide",
                                                  "params": {"boxes": [[0.6, 0, 0.1, 1]]}})
    assert bad.status_code == 422 and "x0 < x1" in bad.json()["error"]


def test_a_full_queue_is_429_with_retry_after_and_jobs_can_be_cancelled(slow_method):
    with make_client(max_queue=1) as c:
        image = upload(c, noise_image())
        first = c.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], "methods": SLOW}).json()
        r = c.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], "methods": {"gradcam": {}}})
        assert r.status_code == 429 and int(r.headers["Retry-After"]) >= 1 and "busy" in r.json()["error"]
        assert c.post("/api/predict", json={"model": MODEL, "image": image["id"]}).status_code == 429
        assert c.delete(f"/api/jobs/{first['id']}").status_code == 200
        assert wait(c, first["id"], timeout=20)["status"] == "cancelled"
        r = c.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], "methods": {"gradcam": {}}})
        assert r.status_code == 202


def test_the_job_time_limit_stops_a_running_method(slow_method):
    with make_client(job_timeout_s=0.5) as c:
        image = upload(c, noise_image())
        job = c.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]], "methods": SLOW}).json()
        state = wait(c, job["id"], timeout=20)
    assert state["status"] == "timed_out" and "time limit of 0.5 s" in state["message"]


def test_unknown_jobs(client):
    assert client.get("/api/jobs/0123456789abcdef").status_code == 404
    assert client.delete("/api/jobs/0123456789abcdef").status_code == 404
    assert client.get("/api/jobs/../../etc").status_code == 404
    r = client.get("/api/jobs/NOT-AN-ID")
    assert r.status_code == 422 and r.json()["error"]


def test_the_model_cache_is_bounded_and_models_keep_their_flags():
    with make_client(max_models=1) as c:
        image = upload(c, noise_image())
        for model in ("shapes-vit-tiny", MODEL):
            assert c.post("/api/predict", json={"model": model, "image": image["id"]}).status_code == 200
        assert c.get("/api/health").json()["models_loaded"] == [MODEL]
        job = c.post("/api/jobs/explain", json={"model": MODEL, "images": [image["id"]],
                                                "methods": {"gradcam": {}}}).json()
        assert wait(c, job["id"])["status"] == "done"
        model = c.app.state.models.get(model_entries()[MODEL])
        assert not model.model.training
        assert all(not m._forward_pre_hooks for m in model.model.modules())
