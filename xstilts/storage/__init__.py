"""One storage layer for everything a study writes outside MLflow's database.

Local folders, network mounts (NFS/EFS) and object stores (`s3://`, `gs://`, and S3-compatible
servers through `AWS_ENDPOINT_URL`) go through the same code: `pyarrow.fs`, the layer Ray Tune
and Ray Train already use for their `storage_path`. Imported by `study`, `trainables` and
`analysis` alike; it imports none of them (nor Ray, nor MLflow).
"""
from xstilts.storage.location import (MANIFEST, Location, StorageError, child, filesystem, folder_checksums, is_uri,
                              local_copy, node_cache_dir, probe, publish, published, to_local, uri_of)

__all__ = ["MANIFEST", "Location", "StorageError", "child", "filesystem", "folder_checksums", "is_uri",
           "local_copy", "node_cache_dir", "probe", "publish", "published", "to_local", "uri_of"]
