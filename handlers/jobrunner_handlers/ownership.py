"""Which Storage paths the worker may delete for a user: those inside the user's own folder.

cleanup_old_data deletes unused objects with the service key, which Storage's policies do not
restrict. Every path it deletes must be in the owner's folder (`<user_id>/...`), with no
`.`/`..`/empty segment, no leading `/`, no backslash, no `%` (nothing that decodes into one of
those), no control character and at most 1024 characters: the same rules as the schema's
`public.is_storage_path_of`, which every progress_photos row a user writes must pass.
"""

from __future__ import annotations

from uuid import UUID

from jobrunner_handlers.storage import StorageRefused, check_object_path

MAX_PATH_LENGTH = 1024


def path_refusal(owner: UUID, path: object) -> str | None:
    """Why `path` is not an object path inside `owner`'s folder, or None when it is."""
    if not isinstance(path, str):
        return f"the path {path!r} is not a string"
    if len(path) > MAX_PATH_LENGTH:
        return f"the path is longer than {MAX_PATH_LENGTH} characters"
    try:
        check_object_path(path)
    except StorageRefused as exc:
        return str(exc)
    if "%" in path:
        return f"the path {path!r} holds a percent-encoding"
    if not path.startswith(f"{owner}/"):
        return f"the path {path!r} is not in the folder {owner}/"
    return None
