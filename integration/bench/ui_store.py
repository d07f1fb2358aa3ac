#!/usr/bin/env python3
"""Writes a registry:2 data directory for the web page's benchmark: REPOS
repositories (team<i % 100>/app<i>) with TAGS tags each, every tag its own
manifest (a shared config and layer, an annotation that makes it unique).
Written straight in registry:2's layout, as registry:2 or berth would have
left it: pushing 100,000 manifests through HTTP would take longer than the
measurement.

    python3 integration/bench/ui_store.py DIR [REPOS=10000] [TAGS=10]
"""
import hashlib
import json
import os
import sys

root = sys.argv[1]
repos = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
tags = int(sys.argv[3]) if len(sys.argv) > 3 else 10
v2 = os.path.join(root, "docker/registry/v2")


def put_blob(data):
    d = hashlib.sha256(data).hexdigest()
    path = f"{v2}/blobs/sha256/{d[:2]}/{d}"
    os.makedirs(path, exist_ok=True)
    with open(f"{path}/data", "wb") as f:
        f.write(data)
    return d


def link(path, d):
    os.makedirs(path, exist_ok=True)
    with open(f"{path}/link", "w") as f:
        f.write("sha256:" + d)


config_bytes = b'{"architecture":"amd64","os":"linux","created":"2026-01-01T00:00:00Z","rootfs":{"type":"layers","diff_ids":[]}}'
layer_bytes = os.urandom(4096)
config, layer = put_blob(config_bytes), put_blob(layer_bytes)
for r in range(repos):
    base = f"{v2}/repositories/team{r % 100}/app{r}"
    link(f"{base}/_layers/sha256/{config}", config)
    link(f"{base}/_layers/sha256/{layer}", layer)
    for t in range(tags):
        manifest = json.dumps({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                       "digest": "sha256:" + config, "size": len(config_bytes)},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                        "digest": "sha256:" + layer, "size": len(layer_bytes)}],
            "annotations": {"repository": str(r), "tag": str(t)},
        }, separators=(",", ":")).encode()
        d = put_blob(manifest)
        link(f"{base}/_manifests/revisions/sha256/{d}", d)
        link(f"{base}/_manifests/tags/v{t}/current", d)
        link(f"{base}/_manifests/tags/v{t}/index/sha256/{d}", d)
print(f"{repos} repositories, {repos * tags} tags")
