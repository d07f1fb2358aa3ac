//! End-to-end tests of the OCI Distribution API: berth on a loopback port with
//! a temp data directory, driven over HTTP, including every bad input the
//! registry must refuse with a 4xx.

use crate::common;

use common::*;
use serde_json::json;

const ZERO: &str = "sha256:0000000000000000000000000000000000000000000000000000000000000000";

#[actix_rt::test]
async fn base_endpoint_and_unknown_paths() {
    let s = TestServer::start().await;
    let c = s.client();
    let r = c.get("/v2/").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    let r = c.req("HEAD", "/v2/", &[], "").await;
    assert_eq!(r.status, 200);
    let r = c.get("/v2/foo/nothing-here").await;
    assert_eq!(r.status, 404);
    assert_eq!(r.header("docker-distribution-api-version"), Some("registry/2.0"));
    assert_eq!(c.get("/healthz").await.status, 200);
    assert_eq!(c.get("/readyz").await.status, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn blob_get_head_range_and_repository_isolation() {
    let s = TestServer::start().await;
    let c = s.client();
    let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
    let d = c.push_blob("team/app", &data).await;
    let path = format!("/v2/team/app/blobs/{d}");

    let r = c.get(&path).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body.as_ref(), &data[..]);
    assert_eq!(r.header("docker-content-digest"), Some(d.to_string().as_str()));

    let r = c.req("HEAD", &path, &[], "").await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-length"), Some("100000"));
    assert_eq!(r.header("docker-content-digest"), Some(d.to_string().as_str()));
    assert!(r.body.is_empty());

    let r = c.req("GET", &path, &[("Range", "bytes=10-19")], "").await;
    assert_eq!(r.status, 206);
    assert_eq!(r.header("content-range"), Some("bytes 10-19/100000"));
    assert_eq!(r.body.as_ref(), &data[10..20]);
    let r = c.req("GET", &path, &[("Range", "bytes=-5")], "").await;
    assert_eq!((r.status, r.body.as_ref()), (206, &data[99_995..]));
    let r = c.req("GET", &path, &[("Range", "bytes=99990-")], "").await;
    assert_eq!(r.body.as_ref(), &data[99_990..]);
    let r = c.req("GET", &path, &[("Range", "bytes=100000-")], "").await;
    assert_eq!(r.status, 416);
    assert_eq!(r.header("content-range"), Some("bytes */100000"));

    // Unknown blob, and a blob that exists but is not linked in this repository.
    let r = c.get(&format!("/v2/team/app/blobs/{ZERO}")).await;
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UNKNOWN"));
    let r = c.get(&format!("/v2/other/blobs/{d}")).await;
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UNKNOWN"));
    assert_eq!(c.req("HEAD", &format!("/v2/other/blobs/{d}"), &[], "").await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn chunked_upload_with_status_and_out_of_order_chunks() {
    let s = TestServer::start().await;
    let c = s.client();
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!(r.status, 202);
    let loc = r.header("location").unwrap().to_string();
    assert!(loc.starts_with("/v2/team/app/blobs/uploads/"), "{loc}");
    assert!(r.header("docker-upload-uuid").is_some());
    assert!(r.header("oci-chunk-min-length").is_some());
    assert_eq!(r.header("range"), Some("0-0"));

    let r =
        c.req("PATCH", &loc, &[("Content-Range", "0-4"), ("Content-Type", "application/octet-stream")], "hello").await;
    assert_eq!(r.status, 202, "{:?}", r.body);
    assert_eq!(r.header("range"), Some("0-4"));
    let loc = r.header("location").unwrap().to_string();

    let r = c.get(&loc).await;
    assert_eq!((r.status, r.header("range")), (204, Some("0-4")));

    // Out of order, overlapping, and a range that disagrees with the body: 416, upload unchanged.
    for range in ["10-14", "0-4", "3-7"] {
        let r = c.req("PATCH", &loc, &[("Content-Range", range)], "XXXXX").await;
        assert_eq!(r.status, 416, "{range}");
    }
    let r = c.req("PATCH", &loc, &[("Content-Range", "5-20")], " big").await;
    assert_eq!(r.status, 416);
    let r = c.req("PATCH", &loc, &[("Content-Range", "junk")], " big").await;
    assert_eq!(r.status, 416);
    assert_eq!(c.get(&loc).await.header("range"), Some("0-4"));

    // A streamed chunk (no Content-Range), then the final PUT with the last bytes.
    let r = c.req("PATCH", &loc, &[], " wor").await;
    assert_eq!((r.status, r.header("range")), (202, Some("0-8")));
    let d = Digest::sha256_of(b"hello world");
    let r = c.req("PUT", &format!("{loc}?digest={d}"), &[("Content-Range", "9-10")], "ld").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(r.header("location"), Some(format!("/v2/team/app/blobs/{d}").as_str()));
    assert_eq!(r.header("docker-content-digest"), Some(d.to_string().as_str()));
    assert_eq!(c.get(&format!("/v2/team/app/blobs/{d}")).await.body.as_ref(), b"hello world");
    // The session is gone once committed.
    assert_eq!(c.get(&loc).await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn post_then_put_monolithic_and_empty_blob() {
    let s = TestServer::start().await;
    let c = s.client();
    let loc = c.req("POST", "/v2/a/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let d = Digest::sha256_of(b"whole");
    let r = c.req("PUT", &format!("{loc}?digest={d}"), &[("Content-Type", "application/octet-stream")], "whole").await;
    assert_eq!(r.status, 201);
    let empty = Digest::sha256_of(b"");
    let r = c.req("POST", &format!("/v2/a/blobs/uploads/?digest={empty}"), &[], "").await;
    assert_eq!(r.status, 201);
    let r = c.req("HEAD", &format!("/v2/a/blobs/{empty}"), &[], "").await;
    assert_eq!((r.status, r.header("content-length")), (200, Some("0")));
    s.stop().await;
}

#[actix_rt::test]
async fn upload_bad_inputs_are_refused_and_store_nothing() {
    let s = TestServer::start().await;
    let c = s.client();
    let loc = c.req("POST", "/v2/a/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();

    // Wrong digest: 400 DIGEST_INVALID, nothing stored, upload discarded.
    let wrong = Digest::sha256_of(b"something else");
    let r = c.req("PUT", &format!("{loc}?digest={wrong}"), &[], "payload").await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    assert!(s.entries(&format!("docker/registry/v2/blobs/sha256/{}", &wrong.hex()[..2])).await.is_empty());
    let actual = Digest::sha256_of(b"payload");
    assert_eq!(c.get(&format!("/v2/a/blobs/{actual}")).await.status, 404);
    assert_eq!(c.get(&loc).await.code(), "BLOB_UPLOAD_UNKNOWN");

    // Monolithic with a wrong digest.
    let r = c.req("POST", &format!("/v2/a/blobs/uploads/?digest={wrong}"), &[], "payload").await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));

    // Missing, malformed and unsupported digests.
    let loc = c.req("POST", "/v2/a/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    assert_eq!(c.req("PUT", &loc, &[], "x").await.code(), "DIGEST_INVALID");
    assert_eq!(c.req("PUT", &format!("{loc}?digest=sha256:abc"), &[], "x").await.code(), "DIGEST_INVALID");
    let r = c.req("PUT", &format!("{loc}?digest=md5:d41d8cd98f00b204e9800998ecf8427e"), &[], "x").await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    assert_eq!(c.get("/v2/a/blobs/md5:abc").await.code(), "DIGEST_INVALID");

    // Unknown and malformed upload ids, and an id used from another repository.
    let unknown = "/v2/a/blobs/uploads/5f0c5f8e-1b8a-4a4e-9d3c-000000000000";
    let r = c.req("PATCH", unknown, &[], "x").await;
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UPLOAD_UNKNOWN"));
    assert_eq!(c.get("/v2/a/blobs/uploads/not-a-uuid").await.code(), "BLOB_UPLOAD_UNKNOWN");
    let id = loc.rsplit('/').next().unwrap();
    assert_eq!(c.get(&format!("/v2/b/blobs/uploads/{id}")).await.status, 404);

    // Cancel.
    assert_eq!(c.req("DELETE", &loc, &[], "").await.status, 204);
    assert_eq!(c.get(&loc).await.status, 404);
    assert_eq!(c.req("DELETE", &loc, &[], "").await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn sha512_blobs() {
    let s = TestServer::start().await;
    let c = s.client();
    let d = Digest::of(berth::oci::Algorithm::Sha512, b"five hundred twelve");
    let r = c.req("POST", &format!("/v2/a/blobs/uploads/?digest={d}"), &[], "five hundred twelve").await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    assert_eq!(c.get(&format!("/v2/a/blobs/{d}")).await.body.as_ref(), b"five hundred twelve");
    assert!(s.has(&format!("docker/registry/v2/blobs/sha512/{}/{}/data", &d.hex()[..2], d.hex())).await);
    s.stop().await;
}

#[actix_rt::test]
async fn cross_repository_mount() {
    let s = TestServer::start().await;
    let c = s.client();
    let d = c.push_blob("src/repo", b"shared layer").await;
    let r = c.req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={d}&from=src/repo"), &[], "").await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/dst/repo/blobs/{d}").as_str()));
    assert_eq!(c.get(&format!("/v2/dst/repo/blobs/{d}")).await.body.as_ref(), b"shared layer");

    // Not mountable (unknown in `from`, or no `from`): a new upload session instead.
    let r = c.req("POST", &format!("/v2/dst/repo/blobs/uploads/?mount={ZERO}&from=src/repo"), &[], "").await;
    assert_eq!(r.status, 202);
    assert!(r.header("location").unwrap().contains("/blobs/uploads/"));
    let r = c.req("POST", &format!("/v2/third/blobs/uploads/?mount={d}"), &[], "").await;
    assert_eq!(r.status, 202);
    assert_eq!(c.get(&format!("/v2/third/blobs/{d}")).await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn manifest_push_pull_by_tag_and_digest() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, d) = c.push_image("team/app", "v1", b"layer bytes").await;

    for reference in ["v1".to_string(), d.to_string()] {
        let r = c.req("GET", &format!("/v2/team/app/manifests/{reference}"), &[("Accept", OCI_MANIFEST)], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.body.as_ref(), &m[..], "bytes are returned exactly as pushed");
        assert_eq!(r.header("content-type"), Some(OCI_MANIFEST));
        assert_eq!(r.header("docker-content-digest"), Some(d.to_string().as_str()));
        assert_eq!(r.header("etag"), Some(format!("\"{d}\"").as_str()));
        let r = c.req("HEAD", &format!("/v2/team/app/manifests/{reference}"), &[], "").await;
        assert_eq!(r.status, 200);
        assert_eq!(r.header("content-length"), Some(m.len().to_string().as_str()));
        assert_eq!(r.header("docker-content-digest"), Some(d.to_string().as_str()));
    }
    // Content negotiation: an Accept that excludes the stored type.
    let r = c.req("GET", "/v2/team/app/manifests/v1", &[("Accept", DOCKER_MANIFEST)], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    let r = c.req("GET", "/v2/team/app/manifests/v1", &[("Accept", "*/*")], "").await;
    assert_eq!(r.status, 200);

    // Push by digest.
    let r = c.put_manifest("team/app", &d.to_string(), OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("location"), Some(format!("/v2/team/app/manifests/{d}").as_str()));

    // Unknown references.
    let r = c.get("/v2/team/app/manifests/nope").await;
    assert_eq!((r.status, r.code().as_str()), (404, "MANIFEST_UNKNOWN"));
    assert_eq!(c.get(&format!("/v2/team/app/manifests/{ZERO}")).await.status, 404);
    assert_eq!(c.get(&format!("/v2/other/manifests/{d}")).await.status, 404);
    assert_eq!(c.get("/v2/team/app/manifests/.bad-tag").await.status, 404);
    s.stop().await;
}

#[actix_rt::test]
async fn manifest_bad_inputs() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, d) = c.push_image("a", "good", b"layer").await;
    let config = Digest::sha256_of(b"{}");

    let r = c.put_manifest("a", "t", OCI_MANIFEST, b"{not json").await;
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"));
    let r = c.put_manifest("a", "t", DOCKER_MANIFEST, &m).await;
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_INVALID"), "Content-Type disagrees with mediaType");
    let r = c
        .put_manifest("a", "t", "application/vnd.docker.distribution.manifest.v1+prettyjws", br#"{"schemaVersion":1}"#)
        .await;
    assert_eq!(r.status, 400);
    let r = c.put_manifest("a", ZERO, OCI_MANIFEST, &m).await;
    assert_eq!((r.status, r.code().as_str()), (400, "DIGEST_INVALID"));
    let r = c.put_manifest("a", ".bad", OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 400);

    // A manifest naming a blob this repository does not have.
    let missing = Digest::sha256_of(b"never pushed");
    let r = c.put_manifest("a", "t", OCI_MANIFEST, &image_manifest(&config, 2, &missing, 12)).await;
    assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"));
    // The blob exists, but only in another repository.
    let elsewhere = c.push_blob("b", b"only in b").await;
    let r = c.put_manifest("a", "t", OCI_MANIFEST, &image_manifest(&config, 2, &elsewhere, 9)).await;
    assert_eq!(r.code(), "MANIFEST_BLOB_UNKNOWN");

    // An index whose child is unknown, then known.
    let index = |child: &Digest| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_INDEX,
            "manifests": [{"mediaType": OCI_MANIFEST, "digest": child.to_string(), "size": 10,
                           "platform": {"os": "linux", "architecture": "amd64"}}]}))
        .unwrap()
    };
    assert_eq!(c.put_manifest("a", "multi", OCI_INDEX, &index(&missing)).await.code(), "MANIFEST_BLOB_UNKNOWN");
    let r = c.put_manifest("a", "multi", OCI_INDEX, &index(&d)).await;
    assert_eq!(r.status, 201);
    assert_eq!(c.get("/v2/a/manifests/multi").await.header("content-type"), Some(OCI_INDEX));

    // Over the 4 MiB limit: 413.
    let mut big = serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "x", "digest": config.to_string(), "size": 2}, "layers": [],
        "annotations": {"pad": "x".repeat(4 * 1024 * 1024)}}))
    .unwrap();
    let r = c.put_manifest("a", "big", OCI_MANIFEST, &big).await;
    assert_eq!(r.status, 413);
    big.truncate(10);

    // Nothing already stored changed.
    let r = c.get("/v2/a/manifests/good").await;
    assert_eq!((r.status, r.body.as_ref()), (200, &m[..]));
    s.stop().await;
}

#[actix_rt::test]
async fn tags_and_catalog_paginate_with_link() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, _) = c.push_image("team/app", "a", b"l").await;
    for t in ["b", "c", "d"] {
        assert_eq!(c.put_manifest("team/app", t, OCI_MANIFEST, &m).await.status, 201);
    }
    let r = c.get("/v2/team/app/tags/list").await;
    assert_eq!(r.json(), json!({"name": "team/app", "tags": ["a", "b", "c", "d"]}));
    assert!(r.header("link").is_none());
    let r = c.get("/v2/team/app/tags/list?n=2").await;
    assert_eq!(r.json()["tags"], json!(["a", "b"]));
    assert_eq!(r.header("link"), Some("</v2/team/app/tags/list?n=2&last=b>; rel=\"next\""));
    let r = c.get("/v2/team/app/tags/list?n=2&last=b").await;
    assert_eq!(r.json()["tags"], json!(["c", "d"]));
    assert!(r.header("link").is_none());
    let r = c.get("/v2/team/app/tags/list?n=0").await;
    assert_eq!((r.json()["tags"].clone(), r.header("link")), (json!([]), None));
    assert_eq!(c.get("/v2/team/app/tags/list?n=x").await.status, 400);
    let r = c.get("/v2/nobody/tags/list").await;
    assert_eq!((r.status, r.code().as_str()), (404, "NAME_UNKNOWN"));

    c.push_image("alpha", "1", b"l").await;
    c.push_image("zeta/x", "1", b"l").await;
    let r = c.get("/v2/_catalog").await;
    assert_eq!(r.json(), json!({"repositories": ["alpha", "team/app", "zeta/x"]}));
    let r = c.get("/v2/_catalog?n=1&last=alpha").await;
    assert_eq!(r.json(), json!({"repositories": ["team/app"]}));
    assert_eq!(r.header("link"), Some("</v2/_catalog?n=1&last=team%2Fapp>; rel=\"next\""));
    s.stop().await;
}

#[actix_rt::test]
async fn referrers_list_and_filter() {
    let s = TestServer::start().await;
    let c = s.client();
    let (_, subject) = c.push_image("a", "v1", b"layer").await;
    let empty = c.push_blob("a", b"{}").await;
    let artifact = |kind: &str| {
        serde_json::to_vec(&json!({"schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": kind,
            "config": {"mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2},
            "layers": [], "subject": {"mediaType": OCI_MANIFEST, "digest": subject.to_string(), "size": 1},
            "annotations": {"org.example": kind}}))
        .unwrap()
    };
    let sig = artifact("application/vnd.example.sig");
    let sbom = artifact("application/vnd.example.sbom");
    let sig_d = Digest::sha256_of(&sig);
    let r = c.put_manifest("a", &sig_d.to_string(), OCI_MANIFEST, &sig).await;
    assert_eq!(r.status, 201);
    assert_eq!(r.header("oci-subject"), Some(subject.to_string().as_str()));
    c.put_manifest("a", &Digest::sha256_of(&sbom).to_string(), OCI_MANIFEST, &sbom).await;

    let r = c.get(&format!("/v2/a/referrers/{subject}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.header("content-type"), Some(OCI_INDEX));
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 2);
    assert!(list.iter().all(|m| m["mediaType"] == OCI_MANIFEST && m["size"].as_u64().unwrap() > 0));

    let r = c.get(&format!("/v2/a/referrers/{subject}?artifactType=application/vnd.example.sig")).await;
    assert_eq!(r.header("oci-filters-applied"), Some("artifactType"));
    let list = r.json()["manifests"].as_array().unwrap().clone();
    assert_eq!(list.len(), 1);
    assert_eq!(list[0]["digest"], sig_d.to_string());
    assert_eq!(list[0]["artifactType"], "application/vnd.example.sig");
    assert_eq!(list[0]["annotations"]["org.example"], "application/vnd.example.sig");

    // No referrers: an empty index, never 404. A bad digest: 400.
    let r = c.get(&format!("/v2/a/referrers/{ZERO}")).await;
    assert_eq!((r.status, r.json()["manifests"].clone()), (200, json!([])));
    assert_eq!(c.get("/v2/a/referrers/sha256:nope").await.status, 400);
    s.stop().await;
}

#[actix_rt::test]
async fn deletes_of_tags_manifests_and_blobs() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, d) = c.push_image("a", "v1", b"layer").await;
    c.put_manifest("a", "v2", OCI_MANIFEST, &m).await;
    c.put_manifest("a", "keep", OCI_MANIFEST, &m).await;

    assert_eq!(c.req("DELETE", "/v2/a/manifests/keep", &[], "").await.status, 202);
    assert_eq!(c.get("/v2/a/manifests/keep").await.status, 404);
    assert_eq!(c.get(&format!("/v2/a/manifests/{d}")).await.status, 200, "deleting a tag keeps the manifest");

    assert_eq!(c.req("DELETE", &format!("/v2/a/manifests/{d}"), &[], "").await.status, 202);
    assert_eq!(c.get(&format!("/v2/a/manifests/{d}")).await.status, 404);
    assert_eq!(c.get("/v2/a/manifests/v1").await.status, 404, "tags on a deleted manifest go with it");
    assert_eq!(c.get("/v2/a/tags/list").await.json()["tags"], json!([]));
    assert_eq!(c.req("DELETE", &format!("/v2/a/manifests/{d}"), &[], "").await.status, 404);

    let layer = Digest::sha256_of(b"layer");
    assert_eq!(c.req("DELETE", &format!("/v2/a/blobs/{layer}"), &[], "").await.status, 202);
    assert_eq!(c.get(&format!("/v2/a/blobs/{layer}")).await.status, 404);
    let r = c.req("DELETE", &format!("/v2/a/blobs/{layer}"), &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (404, "BLOB_UNKNOWN"));
    s.stop().await;
}

#[actix_rt::test]
async fn deletes_disabled_answer_405_unsupported() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.storage.delete.enabled = false;
    })
    .await;
    let c = s.client();
    let (_, d) = c.push_image("a", "v1", b"layer").await;
    for path in [
        "/v2/a/manifests/v1".to_string(),
        format!("/v2/a/manifests/{d}"),
        format!("/v2/a/blobs/{}", Digest::sha256_of(b"layer")),
    ] {
        let r = c.req("DELETE", &path, &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (405, "UNSUPPORTED"), "{path}");
    }
    assert_eq!(c.get("/v2/a/manifests/v1").await.status, 200);
    s.stop().await;
}

#[actix_rt::test]
async fn invalid_names_are_refused_and_the_server_keeps_serving() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, _) = c.push_image("good", "v1", b"layer").await;
    for path in [
        "/v2/UPPER/tags/list",
        "/v2/a/../b/tags/list",
        "/v2/a/%2E%2E/b/manifests/v1",
        "/v2/a//b/manifests/v1",
        "/v2/-a/blobs/uploads/",
        "/v2/a_/manifests/v1",
    ] {
        let method = if path.ends_with("uploads/") { "POST" } else { "GET" };
        let r = c.req(method, path, &[], "").await;
        assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"), "{path}");
    }
    let r = c.req("POST", "/v2/Bad/Name/blobs/uploads/", &[], "").await;
    assert_eq!((r.status, r.code().as_str()), (400, "NAME_INVALID"));
    assert_eq!(c.get("/v2/good/manifests/v1").await.body.as_ref(), &m[..]);
    s.stop().await;
}

#[actix_rt::test]
async fn writes_registry2_layout_exactly() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, d) = c.push_image("team/app", "v1", b"layer bytes").await;
    let layer = Digest::sha256_of(b"layer bytes");
    let v2 = "docker/registry/v2";
    let read = async |p: String| s.read(&p).await.unwrap_or_else(|| panic!("{p} is missing")).to_vec();
    assert_eq!(read(format!("{v2}/blobs/sha256/{}/{}/data", &layer.hex()[..2], layer.hex())).await, b"layer bytes");
    assert_eq!(read(format!("{v2}/blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex())).await, m);
    assert_eq!(
        read(format!("{v2}/repositories/team/app/_layers/sha256/{}/link", layer.hex())).await,
        layer.to_string().as_bytes()
    );
    assert_eq!(
        read(format!("{v2}/repositories/team/app/_manifests/revisions/sha256/{}/link", d.hex())).await,
        d.to_string().as_bytes()
    );
    assert_eq!(
        read(format!("{v2}/repositories/team/app/_manifests/tags/v1/current/link")).await,
        d.to_string().as_bytes()
    );
    assert_eq!(
        read(format!("{v2}/repositories/team/app/_manifests/tags/v1/index/sha256/{}/link", d.hex())).await,
        d.to_string().as_bytes()
    );
    // No temp files or upload directories are left behind.
    assert!(s.entries(&format!("{v2}/repositories/team/app/_uploads")).await.is_empty());
    // The tree is in the bucket on the object backend, and only there.
    assert_eq!(s.path("docker").exists(), !common::on_object_store());
    s.stop().await;
}

#[actix_rt::test]
async fn restart_keeps_everything_and_resumes_uploads() {
    let s = TestServer::start().await;
    let c = s.client();
    let (m, _) = c.push_image("a", "v1", b"layer").await;
    let loc = c.req("POST", "/v2/a/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    c.req("PATCH", &loc, &[("Content-Range", "0-2")], "abc").await;
    let dir = s.stop().await;

    let s = TestServer::start_in(dir, |c| c.mirror.enabled = false).await;
    let c = s.client();
    assert_eq!(c.get("/v2/a/manifests/v1").await.body.as_ref(), &m[..]);
    assert_eq!(c.get(&loc).await.header("range"), Some("0-2"));
    let d = Digest::sha256_of(b"abcdef");
    assert_eq!(c.req("PUT", &format!("{loc}?digest={d}"), &[], "def").await.status, 201);
    assert_eq!(c.get(&format!("/v2/a/blobs/{d}")).await.body.as_ref(), b"abcdef");
    s.stop().await;
}

/// `[validation]` (registry:2's `validation.manifests.urls`): a foreign
/// layer's URLs must be allowed; a refused push names the URL.
#[actix_rt::test]
async fn foreign_layer_urls_are_validated_on_push() {
    let s = TestServer::start_with(|c| {
        c.mirror.enabled = false;
        c.validation.urls_allow = vec!["^https://mcr\\.example\\.com/".into()];
        c.validation.urls_deny = vec!["/private/".into()];
    })
    .await;
    let c = s.client();
    let config = c.push_blob("win/app", b"{}").await;
    let manifest = |url: &str| {
        serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": DOCKER_MANIFEST,
            "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": config.to_string(), "size": 2},
            "layers": [{"mediaType": "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip",
                        "digest": Digest::sha256_of(url.as_bytes()).to_string(), "size": 100, "urls": [url]}]
        }))
        .unwrap()
    };
    let r = c.put_manifest("win/app", "ok", DOCKER_MANIFEST, &manifest("https://mcr.example.com/layer")).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    for (url, why) in [
        ("https://evil.example.org/layer", "urls_allow"),
        ("https://mcr.example.com/private/layer", "urls_deny"),
        ("file:///etc/passwd", "http(s)"),
    ] {
        let r = c.put_manifest("win/app", "no", DOCKER_MANIFEST, &manifest(url)).await;
        assert_eq!((r.status, r.code().as_str()), (400, "MANIFEST_BLOB_UNKNOWN"), "{url}");
        let message = r.json()["errors"][0]["message"].as_str().unwrap().to_string();
        assert!(message.contains(url) && message.contains(why), "{message}");
    }
    assert_eq!(c.get("/v2/win/app/manifests/no").await.status, 404, "nothing stored");
    s.stop().await;
}

/// `server.prefix` (registry:2's `http.prefix`): the API under a path, every
/// path berth writes back (Location, Link, the token realm) with it; the API
/// without it is not there.
#[actix_rt::test]
async fn the_api_answers_under_a_path_prefix() {
    let users = tempfile::tempdir().unwrap();
    let path = users.path().join("htpasswd");
    std::fs::write(&path, berth::htpasswd::line("alice", "pw", 4).unwrap() + "\n").unwrap();
    let s = TestServer::start_with(move |c| {
        c.mirror.enabled = false;
        c.server.prefix = "/registry/".into();
        c.auth.htpasswd = Some(berth::config::HtpasswdConfig { path, realm: "berth".into() });
    })
    .await;
    let anonymous = s.client();
    let r = anonymous.get("/registry/v2/").await;
    assert_eq!(r.status, 401);
    let realm = r.header("www-authenticate").unwrap().to_string();
    assert!(realm.contains("/registry/v2/token\""), "{realm}");
    assert_eq!(anonymous.get("/v2/").await.status, 404, "not without the prefix");
    assert_eq!(anonymous.get("/healthz").await.status, 200, "the probes answer at the root");

    use base64::Engine as _;
    let basic = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode("alice:pw"));
    let c = Client::authorized(&format!("{}/registry", s.base), &basic);
    let r = c.req("POST", "/v2/team/app/blobs/uploads/", &[], "").await;
    assert_eq!(r.status, 202);
    assert!(
        r.header("location").unwrap().starts_with("/registry/v2/team/app/blobs/uploads/"),
        "{:?}",
        r.header("location")
    );
    let config = c.push_blob_two_step("team/app", b"{}").await;
    let layer = c.push_blob_two_step("team/app", b"layer").await;
    let m = image_manifest(&config, 2, &layer, 5);
    for tag in ["a", "b"] {
        let r = c.put_manifest("team/app", tag, OCI_MANIFEST, &m).await;
        assert_eq!(r.status, 201);
        assert!(r.header("location").unwrap().starts_with("/registry/v2/team/app/manifests/sha256:"));
    }
    let r = c.get("/v2/team/app/tags/list?n=1").await;
    assert_eq!(r.json()["tags"], json!(["a"]));
    assert_eq!(r.header("link"), Some("</registry/v2/team/app/tags/list?n=1&last=a>; rel=\"next\""));
    let r = c.get("/v2/team/app/manifests/b").await;
    assert_eq!((r.status, r.body.as_ref()), (200, &m[..]));
    s.stop().await;
}
