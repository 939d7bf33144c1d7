"""The app's Supabase Storage buckets: one set of names for the settings' defaults, the handlers,
the docs and the SQL that creates them with their policies (functions/setup_app_storage.sql; a
test holds the two equal).

`user-uploads`, `analyses` and `avatars` are the backend document's; in each, a user reads and
writes only under their own folder `<user id>/`. `archive` is the plugin's own: cleanup_old_data
writes archived analysis partitions there, and only the service key reaches it.
"""

from __future__ import annotations

# the image types the app accepts (Storage's allowed_mime_types of user-uploads, and what the
# worker's downloads of users' images accept)
IMAGE_CONTENT_TYPES = ("image/jpeg", "image/png", "image/webp", "image/gif", "image/heic", "image/heif")

USER_UPLOADS = "user-uploads"  # users' photos; process_upload's thumbnails go next to them
ANALYSES = "analyses"
AVATARS = "avatars"
ARCHIVE = "archive"

# where users write, each under `<user id>/`
USER_BUCKETS = (USER_UPLOADS, ANALYSES, AVATARS)

# what Storage accepts into user-uploads: 5 MiB, images only
USER_UPLOADS_MAX_BYTES = 5 * 1024 * 1024
USER_UPLOADS_CONTENT_TYPES = IMAGE_CONTENT_TYPES
