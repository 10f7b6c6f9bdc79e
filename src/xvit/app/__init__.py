"""``xvit serve``: a local web app to explain, compare and analyse predictions in the browser, on the library's
own pipeline (:mod:`xvit.pipeline`), method registry and analysis registry. Needs the ``app`` extra
(``pip install 'xvit[app]'``)."""

from xvit.app.server import create_app, serve
from xvit.app.settings import Settings

__all__ = ["Settings", "create_app", "serve"]
