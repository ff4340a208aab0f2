"""``neurogate ui``: a local web explorer for circuits, live steering, study results and blind audits of
their replies.

The page (``static/``) needs no build step and makes no request to any other host; the server binds
127.0.0.1 by default, checks the Origin of every state-changing request, and reads only the folders it
was given."""

from neurogate.ui.server import create_app
from neurogate.ui.settings import UISettings

__all__ = ["UISettings", "create_app"]
