"""The operator's web dashboard (`pip install 'jobrunner[dashboard]'`): the queue's state, the
jobs with their payloads and errors, and actions on them, in a browser.

`jobrunner dashboard` serves it (jobrunner.dashboard.serve); `create_app` returns the ASGI
application to mount inside another one (jobrunner.dashboard.app says how).
"""

from jobrunner.dashboard.app import create_app

__all__ = ["create_app"]
