"""``xvit serve``: its arguments and errors (the app itself is tested in tests/app)."""

from __future__ import annotations

import pytest

pytest.importorskip("fastapi", reason="the web app needs the 'app' extra")

from xvit.cli import main  # noqa: E402


def test_serve_is_listed_and_documents_its_limits(capsys):
    assert main(["--help"]) == 0
    assert "serve" in capsys.readouterr().out
    assert main(["serve", "--help"]) == 0
    out = capsys.readouterr().out
    for flag in ("--allow-dir", "--host", "--max-queue", "--job-timeout", "--max-upload-mb", "--bench"):
        assert flag in out
    assert "127.0.0.1" in out


def test_serve_rejects_a_missing_allowed_folder(tmp_path, capsys):
    assert main(["serve", "--allow-dir", str(tmp_path / "missing")]) == 2
    assert "is not a directory" in capsys.readouterr().err


def test_serve_passes_its_settings_to_the_app(tmp_path, monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr("xvit.app.serve", lambda settings: seen.setdefault("settings", settings))
    argv = ["serve", "--port", "8123", "--allow-dir", str(tmp_path), "--workers", "3", "--max-upload-mb", "1"]
    assert main(argv) == 0
    settings = seen["settings"]
    assert settings.host == "127.0.0.1" and settings.port == 8123 and settings.workers == 3
    assert settings.allow_dirs == (tmp_path.resolve(),) and settings.max_upload_bytes == 2**20
    assert "http://127.0.0.1:8123/" in capsys.readouterr().out
