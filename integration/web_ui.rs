//! The web page in a real browser (Debian's chromium, headless): the
//! repository list (pushed and mirrored, search, filters, sizes, tag
//! counts), a repository's tags, a multi-arch tag's platforms and layers, a
//! tag's referrers and pull commands; and, with authentication on, that an
//! anonymous viewer sees only what it may pull and is offered a login.
//! Checked by what the browser's DOM shows; screenshots of each page are
//! kept under `target/tmp/ui-screenshots/`.

mod common;

use std::collections::BTreeMap;

use common::browser::{artifacts, Chromium};
use common::mirroring::{layer, mirror, pull};
use common::upstream::{Auth, FakeUpstream, OCI_INDEX, OCI_MANIFEST};
use common::webdriver::Browser;
use common::*;
use scraper::{Html, Selector};

/// The texts of the elements `selector` picks, in order.
fn texts(dom: &str, selector: &str) -> Vec<String> {
    let doc = Html::parse_document(dom);
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel).map(|e| e.text().collect::<String>().trim().to_string()).collect()
}

/// `attr` of the elements `selector` picks, in order.
fn attrs(dom: &str, selector: &str, attr: &str) -> Vec<String> {
    let doc = Html::parse_document(dom);
    let sel = Selector::parse(selector).unwrap();
    doc.select(&sel).filter_map(|e| e.value().attr(attr).map(str::to_string)).collect()
}

/// The list's rows: name → (source, tags, bytes).
fn rows(dom: &str) -> BTreeMap<String, (String, String, u64)> {
    let names = texts(dom, "tr.repo td.name a");
    let sources = texts(dom, "tr.repo td.source");
    let tags = texts(dom, "tr.repo td.tags");
    let bytes = attrs(dom, "tr.repo td.size", "data-bytes");
    names
        .into_iter()
        .zip(sources)
        .zip(tags)
        .zip(bytes)
        .map(|(((n, s), t), b)| (n, (s, t, b.parse().unwrap())))
        .collect()
}

struct Pushed {
    app_v1: (Vec<u8>, Digest),
    app_bytes: u64,
    multi: Digest,
    multi_layers: [usize; 2],
}

/// What the pages show: two tags of `team/app`, a two-platform index
/// `team/multi:1`, and an SBOM referring to `team/app:v1`.
async fn push_content(c: &Client) -> Pushed {
    let (l1, l2) = (layer(3_000, 1), layer(5_000, 2));
    let app_v1 = c.push_image("team/app", "v1", &l1).await;
    let app_v2 = c.push_image("team/app", "v2", &l2).await;
    // Both tags share the `{}` config: counted once.
    let app_bytes = (app_v1.0.len() + app_v2.0.len() + 2 + l1.len() + l2.len()) as u64;

    let mut entries = Vec::new();
    let mut multi_layers = [0; 2];
    for (i, (arch, variant)) in [("amd64", None), ("arm64", Some("v8"))].into_iter().enumerate() {
        let config = format!(
            r#"{{"architecture":"{arch}","os":"linux","created":"2026-0{}-02T03:04:05Z","rootfs":{{"type":"layers","diff_ids":[]}}}}"#,
            i + 1
        );
        let config_d = c.push_blob("team/multi", config.as_bytes()).await;
        let l = layer(4_000 + 2_000 * i, 10 + i as u8);
        multi_layers[i] = l.len();
        let layer_d = c.push_blob("team/multi", &l).await;
        let m = image_manifest(&config_d, config.len(), &layer_d, l.len());
        let d = Digest::sha256_of(&m);
        assert_eq!(c.put_manifest("team/multi", &d.to_string(), OCI_MANIFEST, &m).await.status, 201);
        let mut platform = serde_json::json!({ "os": "linux", "architecture": arch });
        if let Some(v) = variant {
            platform["variant"] = v.into();
        }
        entries.push(serde_json::json!({
            "mediaType": OCI_MANIFEST, "digest": d.to_string(), "size": m.len(), "platform": platform
        }));
    }
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries
    }))
    .unwrap();
    assert_eq!(c.put_manifest("team/multi", "1", OCI_INDEX, &index).await.status, 201);

    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    let sbom_d = c.push_blob("team/app", sbom).await;
    let empty = c.push_blob("team/app", b"{}").await;
    let referrer = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": "application/spdx+json",
        "config": { "mediaType": "application/vnd.oci.empty.v1+json", "digest": empty.to_string(), "size": 2 },
        "layers": [{ "mediaType": "application/spdx+json", "digest": sbom_d.to_string(), "size": sbom.len() }],
        "subject": { "mediaType": OCI_MANIFEST, "digest": app_v1.1.to_string(), "size": app_v1.0.len() }
    }))
    .unwrap();
    let r = c.put_manifest("team/app", &Digest::sha256_of(&referrer).to_string(), OCI_MANIFEST, &referrer).await;
    assert_eq!(r.status, 201);
    Pushed { app_v1, app_bytes, multi: Digest::sha256_of(&index), multi_layers }
}

/// Runs `f` with the browser on the blocking pool (each call is a process).
async fn browse<T: Send + 'static>(f: impl FnOnce(&Chromium) -> T + Send + 'static) -> T {
    actix_rt::task::spawn_blocking(move || f(&Chromium::new())).await.unwrap()
}

#[actix_rt::test]
async fn the_pages_list_repositories_tags_platforms_layers_and_referrers() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let alpine = up.add_image("library/alpine", "3.20", &[layer(7_000, 5)]);
    // A pin on one tag, in the short spelling: the page shows the repository pinned.
    let s = mirror(&up, None, |c| c.mirror.pin = vec!["alpine:3.20".into()]).await;
    let c = s.client();
    let pushed = push_content(&c).await;
    pull(&c, "alpine", "3.20", &alpine).await;
    let base = s.base.clone();
    let host = base.trim_start_matches("http://").to_string();
    let shots = artifacts("pages");

    let (list, searched, only_pushed, app, multi, v1) = browse({
        let (base, shots) = (base.clone(), shots.clone());
        move |b| {
            let list = b.dom(&format!("{base}/"));
            b.screenshot(&format!("{base}/ui/"), &shots.join("repositories.png"));
            let searched = b.dom(&format!("{base}/ui/?q=MULTI"));
            let only_pushed = b.dom(&format!("{base}/ui/?kind=pushed"));
            let app = b.dom(&format!("{base}/ui/repo?name=team/app"));
            b.screenshot(&format!("{base}/ui/repo?name=team/app"), &shots.join("repository.png"));
            let multi = b.dom(&format!("{base}/ui/tag?name=team/multi&tag=1"));
            b.screenshot(&format!("{base}/ui/tag?name=team/multi&tag=1"), &shots.join("tag.png"));
            let v1 = b.dom(&format!("{base}/ui/tag?name=team/app&tag=v1"));
            (list, searched, only_pushed, app, multi, v1)
        }
    })
    .await;

    // The list: `/` leads there; pushed and mirrored, with tag counts and sizes.
    let all = rows(&list);
    assert_eq!(all.keys().collect::<Vec<_>>(), ["docker.io/library/alpine", "team/app", "team/multi"], "{list}");
    assert_eq!(all["team/app"].0, "pushed");
    assert_eq!(all["team/app"].1, "2");
    assert_eq!(all["team/app"].2, pushed.app_bytes, "each blob counted once");
    assert_eq!(all["docker.io/library/alpine"].0, "mirror of docker.io");
    // The fake upstream's config of tag 3.20.
    let alpine_config = r#"{"architecture":"amd64","os":"linux","tag":"3.20"}"#.len();
    assert_eq!(all["docker.io/library/alpine"].2, (alpine.manifest.len() + alpine_config + 7_000) as u64);
    assert!(texts(&list, ".tabs").concat().contains("Mirrored from docker.io (1)"), "{list}");
    assert_eq!(texts(&list, "tr.repo td.name span.pin"), ["pinned"], "alpine, pinned by one tag");
    // The pull just made is the mirrored repository's last pull; pushed ones record none.
    assert_eq!(texts(&list, "tr.repo td.pulled"), ["just now", "—", "—"]);
    // Search (any case) and the pushed-only filter.
    assert_eq!(rows(&searched).keys().collect::<Vec<_>>(), ["team/multi"]);
    assert_eq!(rows(&only_pushed).keys().collect::<Vec<_>>(), ["team/app", "team/multi"]);

    // A repository's tags, with digests.
    assert_eq!(texts(&app, "tr.tag td.name"), ["v1", "v2"]);
    assert_eq!(texts(&app, "tr.tag td.digest")[0], pushed.app_v1.1.hex()[..12]);
    assert_eq!(texts(&app, "code.pull"), [format!("docker pull {host}/team/app")]);

    // A multi-arch tag: its platforms, each with its layers and creation time; the pull commands.
    assert_eq!(texts(&multi, "section.image h2"), ["linux/amd64", "linux/arm64/v8"]);
    assert_eq!(texts(&multi, "#digest"), [pushed.multi.to_string()]);
    let layer_sizes: Vec<u64> =
        attrs(&multi, "tr.layer td.size", "data-bytes").iter().map(|b| b.parse().unwrap()).collect();
    assert_eq!(layer_sizes, pushed.multi_layers.map(|n| n as u64));
    assert!(texts(&multi, "section.image p.meta")[1].contains("created 2026-02-02T03:04:05Z"), "{multi}");
    assert_eq!(texts(&multi, "code.pull"), [format!("docker pull {host}/team/multi:1")]);
    assert_eq!(texts(&multi, "code.copy"), [format!("skopeo copy docker://{host}/team/multi:1 oci:multi")]);

    // A tag's referrers: the SBOM.
    assert_eq!(texts(&v1, "tr.referrer td")[0], "application/spdx+json");

    for shot in ["repositories.png", "repository.png", "tag.png"] {
        assert!(std::fs::metadata(shots.join(shot)).unwrap().len() > 10_000, "{shot} is a real screenshot");
    }
    s.stop().await;
    up.stop().await;
}

/// berth with authentication (user alice, password wonderland), mirroring a
/// fake Docker Hub, deletes on if `delete`; `team/app:v1` pushed and
/// `alpine:3.20` pulled through it by alice, whose client it returns.
async fn with_alice(delete: bool) -> (FakeUpstream, TestServer, Client, tempfile::TempDir) {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let alpine = up.add_image("library/alpine", "3.20", &[layer(7_000, 5)]);
    let users = tempfile::tempdir().unwrap();
    let htpasswd = users.path().join("htpasswd");
    std::fs::write(&htpasswd, berth::htpasswd::line("alice", "wonderland", 4).unwrap()).unwrap();
    let s = mirror(&up, None, move |c| {
        c.auth.htpasswd = Some(berth::config::HtpasswdConfig { path: htpasswd, realm: "berth".into() });
        c.storage.delete.enabled = delete;
    })
    .await;
    let c = Client::authorized(&s.base, &format!("Basic {}", base64_encode("alice:wonderland")));
    c.push_image("team/app", "v1", &layer(3_000, 1)).await;
    pull(&c, "alpine", "3.20", &alpine).await;
    (up, s, c, users)
}

#[actix_rt::test]
async fn with_authentication_a_viewer_sees_what_they_may_pull_and_is_offered_a_login() {
    let (up, s, _, _users) = with_alice(false).await;
    let base = s.base.clone();
    let (anonymous, hidden, as_alice) = browse({
        let shots = artifacts("auth");
        move |b| {
            let anonymous = b.dom(&format!("{base}/ui/"));
            b.screenshot(&format!("{base}/ui/"), &shots.join("anonymous.png"));
            let hidden = b.dom(&format!("{base}/ui/repo?name=team/app"));
            // "Log in": the page's 401 makes the browser use the credentials it
            // has (here in the URL; a person types them into its prompt), and it
            // sends them again with the list it is sent back to.
            let with_user = base.replace("http://", "http://alice:wonderland@");
            let as_alice = b.dom(&format!("{with_user}/ui/login"));
            b.screenshot(&format!("{with_user}/ui/login"), &shots.join("alice.png"));
            (anonymous, hidden, as_alice)
        }
    })
    .await;
    // Anonymous: only mirrored content (everyone's by default), and a way to log in.
    assert_eq!(rows(&anonymous).keys().collect::<Vec<_>>(), ["docker.io/library/alpine"], "{anonymous}");
    assert_eq!(texts(&anonymous, "#login"), ["Log in"]);
    assert!(texts(&hidden, "p.problem")[0].contains("Log in to see more"), "{hidden}");
    assert!(!hidden.contains("v1"), "nothing of team/app shows");
    // Alice, logged in and sent back to the list: her pushed repository too.
    assert_eq!(rows(&as_alice).keys().collect::<Vec<_>>(), ["docker.io/library/alpine", "team/app"], "{as_alice}");
    assert!(texts(&as_alice, ".viewer").concat().contains("Signed in as alice"));
    // Without credentials the login page asks the browser for them.
    let r = s.client().get("/ui/login").await;
    assert_eq!(r.status, 401);
    assert_eq!(r.header("www-authenticate"), Some("Basic realm=\"berth\", charset=\"UTF-8\""));
    s.stop().await;
    up.stop().await;
}

fn base64_encode(s: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(s)
}

/// A person's way through the page, in a driven browser: log in through the
/// browser's prompt (credentials in the URL stand for typing them), open a
/// repository and a tag, ask to delete it, confirm; the tag is gone, by the
/// page and by the API. A mirrored tag offers no delete, and a POST that
/// did not come from the confirmation (no form token) deletes nothing.
#[actix_rt::test]
async fn a_logged_in_user_deletes_a_tag_after_confirming() {
    let (up, s, c, _users) = with_alice(true).await;
    c.push_image("team/app", "v2", &layer(4_000, 2)).await;
    let shots = artifacts("delete");

    let b = Browser::start().await;
    b.goto(&format!("{}/ui/login", s.base.replace("http://", "http://alice:wonderland@"))).await;
    assert!(texts(&b.source().await, ".viewer").concat().contains("Signed in as alice"));
    b.click_link("team/app").await;
    b.click_link("v1").await;
    b.click("#delete").await;
    let confirm = b.source().await;
    assert_eq!(texts(&confirm, "h1"), ["Delete team/app:v1?"]);
    b.screenshot(&shots.join("confirm.png")).await;
    b.click("#confirm button").await;
    let after = b.source().await;
    assert!(b.url().await.contains("/ui/repo?name=team%2Fapp"), "{}", b.url().await);
    assert_eq!(texts(&after, "#notice"), ["Deleted the tag v1."]);
    assert_eq!(texts(&after, "tr.tag td.name"), ["v2"]);
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.status, 404);
    assert_eq!(c.get("/v2/team/app/manifests/v2").await.status, 200);
    // Mirrored content: no delete offered.
    b.goto(&format!("{}/ui/tag?name=docker.io/library/alpine&tag=3.20", s.base)).await;
    assert!(texts(&b.source().await, "#delete").is_empty());
    b.quit().await;

    // A forged POST (right credentials, no token from the confirmation): refused, nothing deleted.
    let form = "name=team%2Fapp&tag=v2";
    let forged = c
        .req("POST", "/ui/delete", &[("Content-Type", "application/x-www-form-urlencoded")], form.as_bytes().to_vec())
        .await;
    assert_eq!(forged.status, 403);
    assert_eq!(c.get("/v2/team/app/manifests/v2").await.status, 200);
    s.stop().await;
    up.stop().await;
}

/// The sum of a metric's samples whose labels include every one of `labels`.
fn metric(text: &str, name: &str, labels: &[(&str, &str)]) -> u64 {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .filter(|l| labels.iter().all(|(k, v)| l.contains(&format!("{k}=\"{v}\""))))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .map(|v| v as u64)
        .sum()
}

/// The mirror's page adds up to `/metrics`: after a push pulled back, a cold
/// and a warm pull of one mirrored image and a cold pull of another, and the
/// eviction of what expired, the 24-hour and 30-day charts' bars, the totals,
/// the hit ratio and the bytes eviction freed are what a scrape reports.
#[actix_rt::test]
async fn the_mirror_page_adds_up_to_what_metrics_report() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let alpine = up.add_image("library/alpine", "3.20", &[layer(70_000, 5)]);
    let busybox = up.add_image("library/busybox", "1", &[layer(30_000, 6), layer(20_000, 7)]);
    let s = mirror(&up, None, |c| {
        c.mirror.ttl = std::time::Duration::from_secs(2);
        c.mirror.eviction_interval = std::time::Duration::from_millis(200);
    })
    .await;
    let c = s.client();
    let (m, _) = c.push_image("team/app", "v1", &layer(10_000, 1)).await;
    assert_eq!(c.get("/v2/team/app/manifests/v1").await.body.as_ref(), &m[..]);
    pull(&c, "alpine", "3.20", &alpine).await;
    pull(&c, "alpine", "3.20", &alpine).await;
    pull(&c, "busybox", "1", &busybox).await;
    // Then nobody pulls: everything mirrored expires, and the counters settle.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    let scrape = loop {
        let text = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
        let blobs = metric(&text, "berth_evicted_total", &[("object", "blob")]);
        // Each image's manifest, config and layers: 3 + 4 blobs.
        if blobs == 7 {
            break text;
        }
        assert!(std::time::Instant::now() < deadline, "the mirrored images never expired: {blobs} blobs evicted");
        actix_rt::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    let base = s.base.clone();
    let page = browse(move |b| {
        b.screenshot(&format!("{base}/ui/mirror"), &artifacts("mirror").join("mirror.png"));
        b.dom(&format!("{base}/ui/mirror"))
    })
    .await;

    let served = metric(&scrape, "berth_served_bytes_total", &[("content", "mirrored")]);
    let fetched = metric(&scrape, "berth_upstream_fetched_bytes_total", &[("upstream", "docker.io")]);
    let pushed = metric(&scrape, "berth_served_bytes_total", &[("content", "pushed")]);
    assert!(served > fetched && fetched > 0, "a warm pull served more than was fetched: {served} / {fetched}");
    let num = |sel: &str| -> Vec<u64> { attrs(&page, sel, "data-bytes").iter().map(|b| b.parse().unwrap()).collect() };
    assert_eq!(num("#served"), [served]);
    assert_eq!(num("#fetched"), [fetched]);
    assert_eq!(num("#saved"), [served - fetched]);
    assert_eq!(num("#served-pushed"), [pushed]);
    assert_eq!(num("#evicted"), [metric(&scrape, "berth_evicted_bytes_total", &[])]);
    for chart in ["#last-day", "#last-month"] {
        assert_eq!(num(&format!("{chart} rect.served")).iter().sum::<u64>(), served, "{chart}");
        assert_eq!(num(&format!("{chart} rect.fetched[data-upstream='docker.io']")).iter().sum::<u64>(), fetched);
    }
    assert_eq!(num("#last-day rect.served").len(), 24);
    assert_eq!(num("#last-month rect.served").len(), 30);
    let results = ["hit", "revalidated", "stale", "shared", "joined"];
    let cached: u64 = results.iter().map(|r| metric(&scrape, "berth_mirror_lookups_total", &[("result", r)])).sum();
    let all = metric(&scrape, "berth_mirror_lookups_total", &[]);
    let ratio = format!("{:.1}%", cached as f64 * 100.0 / all as f64);
    assert!(texts(&page, "#hit-ratio")[0].starts_with(&ratio), "{} vs {ratio}", texts(&page, "#hit-ratio")[0]);
    assert_eq!(num("tr.upstream td.fetched"), [fetched]);
    assert!(texts(&page, "#last-eviction")[0].contains("freed"));
    s.stop().await;
    up.stop().await;
}
