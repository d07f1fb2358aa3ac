"""A registry:2 tree of pushed manifests for the benchmarks (not a test):
N tags in REPOS repositories `ci/app<r>`, each tag its own small manifest
over one shared config blob; with --spread-days D, the push times (the link
files' modification times) spread evenly over the last D days.

    python3 make_store.py ROOT N REPOS [--spread-days D]
"""
import hashlib
import json
import os
import sys
import time

root, n, repos = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
spread = float(sys.argv[5]) * 86400 if len(sys.argv) > 5 and sys.argv[4] == "--spread-days" else 0.0
v2 = os.path.join(root, "docker/registry/v2")
now = time.time()


def put_blob(data):
    h = hashlib.sha256(data).hexdigest()
    d = os.path.join(v2, "blobs/sha256", h[:2], h)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "data"), "wb") as f:
        f.write(data)
    return h


def link(path, h, mtime=None):
    os.makedirs(path, exist_ok=True)
    p = os.path.join(path, "link")
    with open(p, "w") as f:
        f.write("sha256:" + h)
    if mtime is not None:
        os.utime(p, (mtime, mtime))


config = put_blob(b"{}")
per = n // repos
for r in range(repos):
    repo = os.path.join(v2, "repositories", f"ci/app{r}")
    link(os.path.join(repo, "_layers/sha256", config), config)
    for i in range(per):
        m = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                                   "digest": "sha256:" + config, "size": 2},
                        "layers": [], "annotations": {"build": f"{r}-{i}"}}).encode()
        h = put_blob(m)
        pushed = now - (per - i) * (spread / per) if spread else None
        link(os.path.join(repo, "_manifests/revisions/sha256", h), h, pushed)
        link(os.path.join(repo, "_manifests/tags", f"build-{i}", "current"), h, pushed)
        link(os.path.join(repo, "_manifests/tags", f"build-{i}", "index/sha256", h), h, pushed)
