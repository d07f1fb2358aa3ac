//! Three berth replicas over one bucket, on SeaweedFS in split mode (a
//! master, three volume servers with replication, a filer, and one S3
//! gateway per replica), as a load balancer would spread clients over them:
//! pushes and pulls go round-robin, chunks of one upload land on different
//! replicas, two replicas push one tag at once, 16 cold pulls of one blob
//! spread over the three make the upstream serve it once, and a replica
//! killed mid-run loses no push that completed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::mirroring::layer;
use common::procs::{berth_with, Proc};
use common::s3::{Cluster, ACCESS_KEY, SECRET_KEY};
use common::upstream::{Auth, FakeUpstream};
use common::*;

fn replica(cluster: &Cluster, i: usize, work: &Path, upstream: &str) -> (Proc, String) {
    let mirror = format!("docker.io={upstream}");
    berth_with(&work.join(format!("replica{i}")), work, &["--mirror", &mirror], |cmd| {
        cmd.env("BERTH_STORAGE__S3__ENDPOINT", &cluster.endpoints[i])
            .env("BERTH_STORAGE__S3__BUCKET", "reg")
            .env("BERTH_STORAGE__S3__PREFIX", "registry")
            .env("BERTH_STORAGE__S3__ACCESS_KEY", ACCESS_KEY)
            .env("BERTH_STORAGE__S3__SECRET_KEY", SECRET_KEY)
            // How stale another replica's tag may be here (README: "Several replicas").
            .env("BERTH_CACHE__TAG_TTL", "1s");
    })
}

/// Pushes a one-layer image to `repo:tag` through three replicas: config,
/// layer and manifest each through another.
async fn push_spread(cs: &[Client], repo: &str, tag: &str, content: &[u8]) -> (Vec<u8>, Digest) {
    let config = cs[0].push_blob(repo, b"{}").await;
    let layer_d = cs[1].push_blob(repo, content).await;
    let m = image_manifest(&config, 2, &layer_d, content.len());
    let r = cs[2].put_manifest(repo, tag, upstream::OCI_MANIFEST, &m).await;
    assert_eq!(r.status, 201, "{:?}", r.body);
    let d = Digest::sha256_of(&m);
    (m, d)
}

/// `push_image` that reports failure (the server went away) instead of failing the test.
async fn try_push_image(c: &Client, repo: &str, content: &[u8]) -> Option<Vec<u8>> {
    for blob in [&b"{}"[..], content] {
        let d = Digest::sha256_of(blob);
        let r = c.try_req("POST", &format!("/v2/{repo}/blobs/uploads/?digest={d}"), &[], blob.to_vec()).await;
        if r.ok()?.status != 201 {
            return None;
        }
    }
    let m = image_manifest(&Digest::sha256_of(b"{}"), 2, &Digest::sha256_of(content), content.len());
    let path = format!("/v2/{repo}/manifests/v1");
    let r = c.try_req("PUT", &path, &[("Content-Type", upstream::OCI_MANIFEST)], m.clone()).await;
    (r.ok()?.status == 201).then_some(m)
}

#[actix_rt::test]
async fn three_replicas_over_one_bucket_behave_as_one_registry() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let url = up.url.clone();
    let (cluster, work, mut procs, addrs) = actix_rt::task::spawn_blocking(move || {
        let cluster = Cluster::start(3);
        cluster.bucket("reg");
        let work = tempfile::tempdir().unwrap();
        let (procs, addrs): (Vec<Proc>, Vec<String>) = (0..3).map(|i| replica(&cluster, i, work.path(), &url)).unzip();
        (cluster, work, procs, addrs)
    })
    .await
    .unwrap();
    let cs: Vec<Client> = addrs.iter().map(|a| Client::new(&format!("http://{a}"))).collect();

    // Round-robin pushes, each image pulled back through every replica.
    for i in 0..3 {
        let rotated: Vec<Client> = (0..3).map(|k| Client::new(&cs[(i + k) % 3].base)).collect();
        let content = layer(300_000, i as u8);
        let (m, _) = push_spread(&rotated, &format!("team/app{i}"), "v1", &content).await;
        for c in &cs {
            assert_eq!(c.get(&format!("/v2/team/app{i}/manifests/v1")).await.body.as_ref(), &m[..]);
            let d = Digest::sha256_of(&content);
            assert_eq!(
                c.get_hashed(&format!("/v2/team/app{i}/blobs/{d}")).await.unwrap(),
                (200, d, content.len() as u64)
            );
        }
    }

    // One upload, its chunks on three replicas, finished on a fourth hop.
    let loc =
        cs[0].req("POST", "/v2/team/chunked/blobs/uploads/", &[], "").await.header("location").unwrap().to_string();
    let parts: [&[u8]; 3] = [b"first chunk, ", b"second chunk, ", b"third chunk"];
    let mut offset = 0;
    for (k, part) in parts.iter().enumerate() {
        let range = format!("{offset}-{}", offset + part.len() - 1);
        let r = cs[k].req("PATCH", &loc, &[("Content-Range", &range)], part.to_vec()).await;
        assert_eq!(r.status, 202, "chunk {k} on replica {k}: {:?}", r.body);
        offset += part.len();
        assert_eq!(cs[(k + 1) % 3].get(&loc).await.header("range"), Some(format!("0-{}", offset - 1).as_str()));
    }
    let whole = parts.concat();
    let d = Digest::sha256_of(&whole);
    assert_eq!(cs[0].req("PUT", &format!("{loc}?digest={d}"), &[], "").await.status, 201);
    assert_eq!(cs[2].get(&format!("/v2/team/chunked/blobs/{d}")).await.body.as_ref(), &whole[..]);

    // Two replicas push one tag at once, again and again: the tag ends on one
    // of the two manifests, the same through every replica (after the tag TTL).
    let (ma, _) = cs[0].push_image("team/race", "a", b"layer a").await;
    let (mb, _) = cs[1].push_image("team/race", "b", b"layer b").await;
    for _ in 0..10 {
        let (ra, rb) = futures::join!(
            cs[0].put_manifest("team/race", "latest", upstream::OCI_MANIFEST, &ma),
            cs[1].put_manifest("team/race", "latest", upstream::OCI_MANIFEST, &mb)
        );
        assert_eq!((ra.status, rb.status), (201, 201));
    }
    // Within the tag TTL set above (1 s, plus the time to ask), every replica says the same.
    let settled = std::time::Instant::now();
    loop {
        let seen: Vec<_> = futures::future::join_all(cs.iter().map(|c| c.get("/v2/team/race/manifests/latest"))).await;
        assert!(seen[0].body == ma || seen[0].body == mb);
        if seen.iter().all(|r| r.status == 200 && r.body == seen[0].body) {
            break;
        }
        assert!(settled.elapsed() < Duration::from_secs(3), "replicas still disagree on the tag after its TTL");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }

    // 16 concurrent cold pulls of one blob over the three replicas, ten times:
    // how many times the upstream served the blob.
    let mut served = Vec::new();
    for run in 0..10u8 {
        let image = up.add_image(&format!("library/cold{run}"), "1", &[layer(4 * 1024 * 1024, 100 + run)]);
        let d = image.layers[0].clone();
        let path = format!("/v2/cold{run}/blobs/{d}");
        let pulls = (0..16).map(|k| cs[k % 3].get_hashed(&path));
        for r in futures::future::join_all(pulls).await {
            assert_eq!(r.unwrap(), (200, d.clone(), 4 * 1024 * 1024));
        }
        served.push(up.count("GET", &format!("/blobs/{d}")));
    }
    let once = served.iter().filter(|&&n| n == 1).count();
    eprintln!("upstream GETs of the blob per run of 16 cold pulls over 3 replicas: {served:?}");
    assert!(once >= 8, "the upstream served the blob once in only {once} of 10 runs: {served:?}");
    assert!(served.iter().all(|&n| n <= 3), "{served:?}");

    // A replica killed (SIGKILL) in the middle of its pushes loses none that completed.
    let victim = Client::new(&cs[2].base);
    let completed = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let record = completed.clone();
    let pushes = actix_rt::spawn(async move {
        for i in 0u8.. {
            let content = layer(8 * 1024 * 1024, i);
            let Some(m) = try_push_image(&victim, &format!("team/kill{i}"), &content).await else { return };
            record.lock().unwrap().push((i, m, Digest::sha256_of(&content)));
        }
    });
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    while completed.lock().unwrap().len() < 3 {
        assert!(std::time::Instant::now() < deadline, "the pushes never completed");
        actix_rt::time::sleep(Duration::from_millis(10)).await;
    }
    let killed = procs.pop().unwrap();
    actix_rt::task::spawn_blocking(move || killed.kill()).await.unwrap();
    pushes.await.unwrap();
    let done = completed.lock().unwrap().clone();
    for (i, m, d) in &done {
        for c in &cs[..2] {
            assert_eq!(c.get(&format!("/v2/team/kill{i}/manifests/v1")).await.body.as_ref(), &m[..]);
            assert_eq!(c.get_hashed(&format!("/v2/team/kill{i}/blobs/{d}")).await.unwrap(), (200, d.clone(), 8 << 20));
        }
    }
    actix_rt::task::spawn_blocking(move || {
        for p in procs {
            p.stop();
        }
        drop(cluster);
        drop(work);
    })
    .await
    .unwrap();
    up.stop().await;
}

/// Lifecycle over one bucket: expiry runs in one replica's turn at a time,
/// and what clients pull through one replica keeps an image whichever
/// replica's turn judges it. Both images are fetched through A at once; then
/// only `kept` is pulled, through B, until `idle` has expired. At that pass
/// `kept`, last used through A as long ago as `idle`, must still be there:
/// only B's uses, published to the bucket, keep it. Once no one pulls it, it
/// expires too, never before its TTL after the last pull through B.
#[actix_rt::test]
async fn uses_through_one_replica_keep_an_image_in_another_replicas_turn() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let kept = up.add_image("library/kept", "1", &[layer(10_000, 1)]);
    let idle = up.add_image("library/idle", "1", &[layer(10_000, 2)]);
    let url = up.url.clone();
    let start = move |weed: &common::s3::Weed, work: &Path, name: &str| {
        let mirror = format!("docker.io={url}");
        let s3 = weed.config("reg", "registry");
        berth_with(&work.join(name), work, &["--mirror", &mirror], |cmd| {
            cmd.env("BERTH_STORAGE__S3__ENDPOINT", &s3.endpoint)
                .env("BERTH_STORAGE__S3__BUCKET", &s3.bucket)
                .env("BERTH_STORAGE__S3__PREFIX", &s3.prefix)
                .env("BERTH_STORAGE__S3__ACCESS_KEY", &s3.access_key)
                .env("BERTH_STORAGE__S3__SECRET_KEY", &s3.secret_key)
                .env("BERTH_MIRROR__TTL", "6s")
                .env("BERTH_MIRROR__EVICTION_INTERVAL", "300ms");
        })
    };
    let (weed, work, a, b) = actix_rt::task::spawn_blocking(move || {
        let weed = common::s3::Weed::start();
        weed.bucket("reg");
        let work = tempfile::tempdir().unwrap();
        let a = start(&weed, work.path(), "a");
        let b = start(&weed, work.path(), "b");
        (weed, work, a, b)
    })
    .await
    .unwrap();
    let bucket = berth::store::object::s3(&weed.config("reg", "registry")).unwrap();
    let present = async |d: &Digest| {
        use berth::store::Backend;
        bucket.stat(&berth::store::layout::blob_data(d)).await.unwrap().is_some()
    };
    let (ca, cb) = (Client::new(&format!("http://{}", a.1)), Client::new(&format!("http://{}", b.1)));
    common::mirroring::pull(&ca, "kept", "1", &kept).await;
    common::mirroring::pull(&ca, "idle", "1", &idle).await;
    let deadline = Instant::now() + Duration::from_secs(120);
    while present(&idle.layers[0]).await {
        assert!(Instant::now() < deadline, "idle content never expired");
        common::mirroring::pull(&cb, "kept", "1", &kept).await;
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    let last_use_through_b = Instant::now();
    assert!(present(&kept.layers[0]).await, "uses through B did not reach the turn that expired idle");
    while present(&kept.layers[0]).await {
        assert!(Instant::now() < deadline, "kept content never expired once unused");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
    // Uses are kept in whole seconds: never gone sooner than a second short of the TTL.
    assert!(last_use_through_b.elapsed() >= Duration::from_secs(5), "kept expired before its TTL after B's last use");
    drop((a, b));
    up.stop().await;
    drop((weed, work));
}

/// Retention over one bucket: pulls of pushed tags through one replica keep
/// them in another replica's retention run. Two tags are pushed through A;
/// only `kept` is pulled, through B, while A's runs (`berth retention`, in
/// A's lifecycle turn) wait for `idle` to go, unpulled for longer than the
/// rule's `unpulled_for`. `kept`, last pulled through A never, must still be
/// there: only B's pulls, published to the bucket, keep it. Once nobody pulls
/// it, it goes too, never sooner than `unpulled_for` after B's last pull.
#[actix_rt::test]
async fn pulls_through_one_replica_keep_a_pushed_tag_in_another_replicas_retention() {
    let (weed, work, a, b) = actix_rt::task::spawn_blocking(move || {
        let weed = common::s3::Weed::start();
        weed.bucket("reg");
        let work = tempfile::tempdir().unwrap();
        let config = work.path().join("berth.toml");
        std::fs::write(&config, "[[retention]]\nrepositories = [\"team/*\"]\nunpulled_for = \"6s\"\n").unwrap();
        let start = |name: &str| {
            let s3 = weed.config("reg", "registry");
            berth_with(
                &work.path().join(name),
                work.path(),
                &["--no-mirror", "--config", config.to_str().unwrap()],
                |cmd| {
                    cmd.env("BERTH_STORAGE__S3__ENDPOINT", &s3.endpoint)
                        .env("BERTH_STORAGE__S3__BUCKET", &s3.bucket)
                        .env("BERTH_STORAGE__S3__PREFIX", &s3.prefix)
                        .env("BERTH_STORAGE__S3__ACCESS_KEY", &s3.access_key)
                        .env("BERTH_STORAGE__S3__SECRET_KEY", &s3.secret_key)
                        .env("BERTH_MIRROR__EVICTION_INTERVAL", "300ms")
                        // How stale another replica's tag may be here (README: "Several replicas").
                        .env("BERTH_CACHE__TAG_TTL", "1s");
                },
            )
        };
        let (a, b) = (start("a"), start("b"));
        (weed, work, a, b)
    })
    .await
    .unwrap();
    let (ca, cb) = (Client::new(&format!("http://{}", a.1)), Client::new(&format!("http://{}", b.1)));
    ca.push_image("team/app", "kept", b"kept layer").await;
    ca.push_image("team/app", "idle", b"idle layer").await;
    let data_a = work.path().join("a");
    let retention_in_a = move || {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_berth"))
            .args(["retention", "--json", "--data"])
            .arg(&data_a)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        report["removals"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["tag"].as_str().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    let run = async || actix_rt::task::spawn_blocking(retention_in_a.clone()).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        assert_eq!(cb.get("/v2/team/app/manifests/kept").await.status, 200);
        let removed = run().await;
        if !removed.is_empty() {
            assert_eq!(removed, ["idle"], "pulls through B did not reach A's run");
            break;
        }
        assert!(Instant::now() < deadline, "idle never went");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    let last_pull_through_b = Instant::now();
    assert_eq!(ca.get("/v2/team/app/manifests/idle").await.status, 404);
    assert_eq!(ca.get("/v2/team/app/manifests/kept").await.status, 200, "kept pulls through A");
    loop {
        if run().await == ["kept"] {
            break;
        }
        assert!(Instant::now() < deadline, "kept never went once unpulled");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    // Pulls are kept in whole seconds: never gone sooner than a second short of `unpulled_for`.
    assert!(
        last_pull_through_b.elapsed() >= Duration::from_secs(5),
        "kept went before unpulled_for after B's last pull"
    );
    // B sees it gone once its tag cache (`cache.tag_ttl`, 1 s here) lapses.
    while cb.get("/v2/team/app/manifests/kept").await.status != 404 {
        assert!(Instant::now() < deadline, "B still serves the removed tag");
        actix_rt::time::sleep(Duration::from_millis(200)).await;
    }
    drop((a, b));
    drop((weed, work));
}
