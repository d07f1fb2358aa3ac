//! SIGKILL at any moment: berth is killed again and again while clients push,
//! pull through the mirror, and eviction and garbage collection run (a cap
//! far below what is pulled, GC every 300 ms with no grace). After each
//! restart every visible tag resolves, every manifest a tag names is whole,
//! every blob's bytes hash to its digest, and no repair is needed.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use common::mirroring::layer;
use common::procs::{berth_with, http, send};
use common::upstream::{Auth, FakeUpstream, Image};
use common::Digest;

const MT: &str = "application/vnd.oci.image.manifest.v1+json";

/// Pushes image `i` of `repo` (a config and one layer) monolithically.
fn push_image(addr: &str, repo: &str, i: u32) -> std::io::Result<bool> {
    let layer = format!("layer {i} {}", "x".repeat(i as usize * 97 % 5000)).into_bytes();
    for blob in [b"{}".as_slice(), &layer] {
        let d = Digest::sha256_of(blob);
        let (status, _) =
            send("POST", addr, &format!("/v2/{repo}/blobs/uploads/?digest={d}"), "application/octet-stream", blob)?;
        if status != 201 {
            return Ok(false);
        }
    }
    let m = common::image_manifest(&Digest::sha256_of(b"{}"), 2, &Digest::sha256_of(&layer), layer.len());
    let (status, _) = send("PUT", addr, &format!("/v2/{repo}/manifests/v{i}"), MT, &m)?;
    Ok(status == 201)
}

fn sha256_file(path: &Path) -> Digest {
    Digest::sha256_of(&std::fs::read(path).unwrap())
}

/// The store after a kill: every blob hashes to its name; every visible tag
/// (one with its current link) names a manifest whose revision and data are
/// there; and, through a server started on it, pushed images pull whole.
fn verify(data: &Path, addr: &str) -> usize {
    let v2 = data.join("docker/registry/v2");
    for prefix in std::fs::read_dir(v2.join("blobs/sha256")).into_iter().flatten().flatten() {
        for blob in std::fs::read_dir(prefix.path()).unwrap().flatten() {
            let name = blob.file_name().to_string_lossy().to_string();
            let file = blob.path().join("data");
            if file.exists() {
                assert_eq!(sha256_file(&file).hex(), name, "blob {name} holds other bytes");
            }
        }
    }
    let mut tags = 0;
    let mut pending = vec![v2.join("repositories")];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).into_iter().flatten().flatten() {
            let path = entry.path();
            if entry.file_name() == "_manifests" {
                let repo = dir.strip_prefix(v2.join("repositories")).unwrap().to_string_lossy().to_string();
                for tag in std::fs::read_dir(path.join("tags")).into_iter().flatten().flatten() {
                    // A tag whose deletion a kill cut short has lost its current link first: invisible.
                    let Ok(link) = std::fs::read_to_string(tag.path().join("current/link")) else {
                        let (status, _, body) = http("GET", addr, &format!("/v2/{repo}/tags/list")).unwrap();
                        let t = tag.file_name().to_string_lossy().to_string();
                        assert!(
                            status != 200 || !String::from_utf8_lossy(&body).contains(&format!("\"{t}\"")),
                            "{repo}:{t} is listed"
                        );
                        continue;
                    };
                    let d: Digest = link.parse().expect("a tag link holds a digest");
                    let blob = v2.join(format!("blobs/sha256/{}/{}/data", &d.hex()[..2], d.hex()));
                    assert!(
                        blob.is_file(),
                        "{repo}:{} names {d}, whose data is gone",
                        tag.file_name().to_string_lossy()
                    );
                    assert!(
                        path.join(format!("revisions/sha256/{}/link", d.hex())).is_file(),
                        "{repo}: revision of {d}"
                    );
                    tags += 1;
                    if !repo.starts_with("_mirror") {
                        let t = tag.file_name().to_string_lossy().to_string();
                        let (status, _, body) = http("GET", addr, &format!("/v2/{repo}/manifests/{t}")).unwrap();
                        assert_eq!(status, 200, "{repo}:{t}");
                        let m: serde_json::Value = serde_json::from_slice(&body).unwrap();
                        for l in m["layers"].as_array().unwrap() {
                            let ld = l["digest"].as_str().unwrap();
                            let (status, _, bytes) = http("GET", addr, &format!("/v2/{repo}/blobs/{ld}")).unwrap();
                            assert_eq!(
                                (status, Digest::sha256_of(&bytes).to_string()),
                                (200, ld.to_string()),
                                "{repo}:{t} {ld}"
                            );
                        }
                    }
                }
            } else if path.is_dir() && !entry.file_name().to_string_lossy().starts_with('_')
                || entry.file_name() == "_mirror"
            {
                pending.push(path);
            }
        }
    }
    tags
}

#[actix_rt::test]
async fn sigkill_during_pushes_pulls_eviction_and_gc_leaves_a_sound_store() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let images: Vec<Image> = (0..6)
        .map(|i| {
            up.add_image(&format!("library/img{i}"), "1", &[layer(150_000, i as u8), layer(40_000, 100 + i as u8)])
        })
        .collect();
    let url = up.url.clone();
    actix_rt::task::spawn_blocking(move || rounds(&url, &images)).await.unwrap();
    up.stop().await;
}

fn rounds(upstream: &str, images: &[Image]) {
    let work = tempfile::tempdir().unwrap();
    let data = work.path().join("data");
    let mirror = format!("docker.io={upstream}");
    let start = || {
        berth_with(&data, work.path(), &["--mirror", &mirror], |cmd| {
            cmd.env("BERTH_MIRROR__MAX_SIZE", "256KiB")
                .env("BERTH_MIRROR__EVICTION_INTERVAL", "50ms")
                .env("BERTH_GC__SCHEDULE", "300ms")
                .env("BERTH_GC__GRACE", "0s");
        })
    };
    // A quiet server (no eviction, no GC) for checking what a kill left.
    let check = || {
        let (b, addr) = berth_with(&data, work.path(), &["--mirror", &mirror], |_| {});
        let tags = verify(&data, &addr);
        b.stop();
        tags
    };
    let mut pushed_total = 0;
    for round in 0..6u32 {
        if round > 0 {
            let tags = check();
            assert!(tags > 0 || pushed_total == 0, "round {round}: tags survived");
        }
        let (b, addr) = start();
        let stop = Arc::new(AtomicBool::new(false));
        let mut load = Vec::new();
        for w in 0..2u32 {
            let (addr, stop) = (addr.clone(), stop.clone());
            load.push(std::thread::spawn(move || {
                let mut ok = 0;
                let mut i = 0;
                while !stop.load(Ordering::Relaxed) {
                    match push_image(&addr, &format!("team/app{w}"), round * 1000 + i) {
                        Ok(true) => ok += 1,
                        Ok(false) => {}
                        Err(_) => break,
                    }
                    i += 1;
                }
                ok
            }));
        }
        for w in 0..2usize {
            let (addr, stop, images) = (addr.clone(), stop.clone(), images.to_vec());
            load.push(std::thread::spawn(move || {
                let mut n = 0;
                while !stop.load(Ordering::Relaxed) {
                    let img = &images[(n + w * 3) % images.len()];
                    let name = format!("img{}", (n + w * 3) % images.len());
                    if http("GET", &addr, &format!("/v2/{name}/manifests/1")).is_err() {
                        break;
                    }
                    for d in std::iter::once(&img.config).chain(&img.layers) {
                        if http("GET", &addr, &format!("/v2/{name}/blobs/{d}")).is_err() {
                            break;
                        }
                    }
                    n += 1;
                }
                0
            }));
        }
        // Kill at a moment that differs from round to round.
        std::thread::sleep(Duration::from_millis(300 + u64::from(round) * 170 % 600));
        b.kill();
        stop.store(true, Ordering::Relaxed);
        for t in load {
            pushed_total += t.join().unwrap();
        }
    }
    assert!(pushed_total > 0, "pushes were made");
    assert!(check() > 0);
}
