//! Notifications (registry:2's `notifications`): the same envelopes as
//! Distribution 2.8 for the same skopeo push, pull and delete; a receiver
//! that is down for a minute gets every event once afterwards; events
//! pending when berth is SIGKILLed arrive after the restart, and a clean
//! restart sends nothing twice.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use common::images::busybox_layout;
use common::procs::{berth, distribution, http, run, Proc};
use common::receiver::Receiver;

/// berth with one endpoint per `(name, path)` at `recv`, deletes on.
fn berth_notifying(w: &Path, data: &Path, recv: &Receiver, endpoints: &[(&str, &str)]) -> (Proc, String) {
    let mut toml = String::from("[storage.delete]\nenabled = true\n");
    for (name, path) in endpoints {
        toml.push_str(&format!(
            "[[notifications.endpoints]]\nname = {name:?}\nurl = {:?}\ntimeout = \"2s\"\nthreshold = 3\nbackoff = \"200ms\"\n",
            recv.url(path)
        ));
    }
    let cfg = w.join(format!("berth-{}.toml", common::procs::free_port()));
    std::fs::write(&cfg, toml).unwrap();
    berth(data, w, &["--config", cfg.to_str().unwrap()])
}

fn skopeo(args: &[&str]) -> String {
    run(Command::new("skopeo").args(args))
}

/// The push, the pulls and the delete every test makes, by skopeo.
fn push_pull_delete(w: &Path, layout: &common::images::Layout, addr: &str, repo: &str) {
    let image = format!("docker://{addr}/{repo}:v1");
    skopeo(&["copy", "--dest-tls-verify=false", &layout.reference("single"), &image]);
    skopeo(&["inspect", "--tls-verify=false", &image]);
    let out = w.join(format!("pulled-{}", common::procs::free_port()));
    skopeo(&["copy", "--src-tls-verify=false", &image, &format!("dir:{}", out.display())]);
    skopeo(&["delete", "--tls-verify=false", &image]);
}

/// An event without what differs by server and moment: ids, timestamps,
/// addresses, the source, and the server's address in the URL.
fn normalized(e: &Value, addr: &str) -> Value {
    let mut e = e.clone();
    let o = e.as_object_mut().unwrap();
    for k in ["id", "timestamp", "source"] {
        assert!(o.contains_key(k), "an event without {k}: {e:?}", e = o);
        o.remove(k);
    }
    let req = o.get_mut("request").unwrap().as_object_mut().unwrap();
    for k in ["id", "addr", "host"] {
        assert!(req.get(k).and_then(Value::as_str).is_some_and(|v| !v.is_empty()), "request.{k} is empty: {req:?}");
        req.remove(k);
    }
    if let Some(url) = o["target"].get("url").and_then(Value::as_str).map(str::to_string) {
        o.get_mut("target").unwrap()["url"] = url.replace(addr, "SERVER").into();
    }
    e
}

fn sorted(events: &[Value], addr: &str) -> Vec<String> {
    let mut v: Vec<String> = events.iter().map(|e| normalized(e, addr).to_string()).collect();
    v.sort();
    v
}

#[test]
fn berth_sends_what_distribution_sends_for_the_same_push_pull_and_delete() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let recv = Receiver::start();
    let yaml = format!(
        "notifications:\n  endpoints:\n    - name: test\n      url: {}\n      timeout: 2s\n      threshold: 3\n      backoff: 200ms\n",
        recv.url("/distribution")
    );
    let (_dist, dist) = distribution(&w.join("dist-data"), w, &yaml);
    let (_berth, addr) = berth_notifying(w, &w.join("berth-data"), &recv, &[("test", "/berth")]);
    push_pull_delete(w, &layout, &dist, "team/app");
    push_pull_delete(w, &layout, &addr, "team/app");
    // Distribution delivers from memory in the background, berth from its
    // queue: both are waited for until they agree (or 30 s).
    let expected = sorted(
        &recv.wait("/distribution", "Distribution's delete event", |e| e.iter().any(|e| e["action"] == "delete")),
        &dist,
    );
    assert!(expected.len() >= 6, "Distribution sent too few events to compare: {expected:#?}");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let got = loop {
        let got = recv.events("/berth");
        if sorted(&got, &addr) == expected {
            break got;
        }
        if std::time::Instant::now() > deadline {
            let got = sorted(&got, &addr);
            let only = |a: &[String], b: &[String]| a.iter().filter(|x| !b.contains(x)).cloned().collect::<Vec<_>>();
            panic!(
                "berth's events differ from Distribution's.\nonly Distribution's:\n{}\nonly berth's:\n{}",
                only(&expected, &got).join("\n"),
                only(&got, &expected).join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    // Everything a consumer reads: the actions, the targets, the method and user agent.
    for action in ["push", "pull", "delete"] {
        assert!(got.iter().any(|e| e["action"] == action), "no {action} event: {got:#?}");
    }
    let manifest_push = got.iter().find(|e| e["action"] == "push" && e["target"]["tag"] == "v1").unwrap();
    assert_eq!(manifest_push["target"]["repository"], "team/app");
    assert_eq!(manifest_push["target"]["digest"], layout.digest("single").to_string());
    assert_eq!(manifest_push["request"]["method"], "PUT");
    assert!(manifest_push["source"]["instanceID"].as_str().is_some_and(|s| !s.is_empty()));
    // Nothing is left pending, and the metrics say what was sent.
    let (_, _, body) = http("GET", &addr, "/metrics").unwrap();
    let metrics = String::from_utf8(body).unwrap();
    assert!(
        metrics.contains(&format!("berth_notifications_sent_total{{endpoint=\"test\"}} {}", got.len())),
        "{metrics}"
    );
    assert!(metrics.contains("berth_notifications_pending{endpoint=\"test\"} 0"), "{metrics}");
}

/// A gauge or counter's value for `endpoint` in `/metrics`.
fn metric(addr: &str, name: &str, endpoint: &str) -> Option<u64> {
    let (_, _, body) = http("GET", addr, "/metrics").ok()?;
    let prefix = format!("{name}{{endpoint=\"{endpoint}\"}} ");
    String::from_utf8(body).ok()?.lines().find_map(|l| l.strip_prefix(&prefix)?.parse().ok())
}

fn ids(events: &[Value]) -> Vec<String> {
    events.iter().map(|e| e["id"].as_str().unwrap().to_string()).collect()
}

#[test]
fn a_receiver_down_for_a_minute_then_up_gets_every_event_once() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let (steady, flaky) = (Receiver::start(), Receiver::start());
    // One berth, two endpoints: `steady` always answers, `flaky` is down.
    let mut toml = String::from("[storage.delete]\nenabled = true\n");
    for (name, recv) in [("steady", &steady), ("flaky", &flaky)] {
        toml.push_str(&format!(
            "[[notifications.endpoints]]\nname = {name:?}\nurl = {:?}\nthreshold = 3\nbackoff = \"1s\"\n",
            recv.url("/events")
        ));
    }
    std::fs::write(w.join("berth.toml"), toml).unwrap();
    flaky.set_down(true);
    let (_berth, addr) = berth(&w.join("data"), w, &["--config", w.join("berth.toml").to_str().unwrap()]);
    let down_since = std::time::Instant::now();
    push_pull_delete(w, &layout, &addr, "team/app");
    let sent =
        steady.wait("/events", "the steady endpoint's delete event", |e| e.iter().any(|e| e["action"] == "delete"));
    // A minute down, retried every backoff: the events wait (counted pending).
    let mut seen_refusals = 0;
    while down_since.elapsed() < Duration::from_secs(60) {
        seen_refusals = flaky.refused();
        std::thread::sleep(Duration::from_millis(500));
    }
    assert!(seen_refusals >= 20, "berth stopped retrying: {seen_refusals} attempts in a minute");
    assert_eq!(metric(&addr, "berth_notifications_pending", "flaky"), Some(sent.len() as u64));
    assert!(flaky.events("/events").is_empty());
    flaky.set_down(false);
    let got = flaky.wait("/events", "every event after the minute", |e| e.len() >= sent.len());
    assert_eq!(ids(&got), ids(&sent), "the same events, in the same order, each once");
    assert_eq!(ids(&steady.events("/events")), ids(&sent), "the steady endpoint got each once");
    let failed = metric(&addr, "berth_notifications_failed_total", "flaky").unwrap();
    assert!(failed as usize >= seen_refusals, "failed {failed}, refusals {seen_refusals}");
}

#[test]
fn pending_events_survive_a_sigkill_and_a_clean_restart_sends_nothing_twice() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let recv = Receiver::start();
    let data = w.join("data");
    recv.set_down(true);
    let (berth1, addr) = berth_notifying(w, &data, &recv, &[("hook", "/events")]);
    push_pull_delete(w, &layout, &addr, "team/app");
    // The events are on disk once counted pending; then the process dies.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while metric(&addr, "berth_notifications_pending", "hook").unwrap_or(0) < 6 {
        assert!(std::time::Instant::now() < deadline, "events never queued");
        std::thread::sleep(Duration::from_millis(50));
    }
    let queued = metric(&addr, "berth_notifications_pending", "hook").unwrap();
    berth1.kill();
    assert!(recv.events("/events").is_empty());
    recv.set_down(false);
    let (berth2, addr2) = berth_notifying(w, &data, &recv, &[("hook", "/events")]);
    let got = recv.wait("/events", "the events from before the SIGKILL", |e| e.len() as u64 >= queued);
    assert!(got.iter().any(|e| e["action"] == "delete") && got.iter().any(|e| e["action"] == "push"));
    let mut unique = ids(&got);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), got.len(), "nothing was in flight at the kill: nothing twice");
    // A clean stop and start: one more event arrives, none again.
    let before = got.len();
    berth2.stop();
    let (_berth3, addr3) = berth_notifying(w, &data, &recv, &[("hook", "/events")]);
    assert_ne!(addr2, addr3);
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &layout.reference("single"),
        &format!("docker://{addr3}/team/other:v2"),
    ]);
    let _ = recv.wait("/events", "the push after the clean restart", |e| {
        e.iter().any(|e| e["target"]["tag"] == "v2") && e.len() > before
    });
    let all = recv.events("/events");
    let mut unique = ids(&all);
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), all.len(), "an event was sent twice across the clean restart: {all:#?}");
}

/// The events at `path` once `ready` holds, polled without blocking the
/// in-process server's runtime (30 s at most).
async fn events_when(recv: &Receiver, path: &str, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let events = recv.events(path);
        if ready(&events) {
            return events;
        }
        assert!(std::time::Instant::now() < deadline, "{what}: not within 30 s: {events:#?}");
        actix_rt::time::sleep(Duration::from_millis(50)).await;
    }
}

#[actix_rt::test]
async fn the_mirror_says_what_it_fetched_and_evicted_marked_as_mirrored() {
    use common::mirroring::{layer, mirror, pull, set_ttl};
    use common::upstream::{Auth, FakeUpstream};
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let img = up.add_image("library/busy", "1", &[layer(10_000, 1)]);
    let recv = Receiver::start();
    let url = recv.url("/events");
    let s = mirror(&up, None, |c| {
        c.mirror.ttl = Duration::from_secs(1);
        c.mirror.eviction_interval = Duration::from_millis(100);
        set_ttl(c, Duration::from_secs(3600));
        c.notifications.endpoints.push(berth::config::NotifyEndpoint {
            name: "hook".into(),
            url,
            backoff: Duration::from_millis(100),
            ..Default::default()
        });
    })
    .await;
    pull(&s.client(), "busy", "1", &img).await;
    let repo = "docker.io/library/busy";
    let has = |e: &[Value], action: &str, digest: &str| {
        e.iter().any(|e| e["action"] == action && e["target"]["digest"] == digest && e["target"]["repository"] == repo)
    };
    let (manifest, layer) = (img.digest.to_string(), img.layers[0].to_string());
    let events = events_when(&recv, "/events", "the pull's and the fetches' events", |e| {
        has(e, "pull", &manifest) && has(e, "fetch", &manifest) && has(e, "fetch", &layer) && has(e, "pull", &layer)
    })
    .await;
    for e in &events {
        assert_eq!(e["mirror"]["upstream"], "docker.io", "an event about mirrored content, unmarked: {e}");
    }
    let fetched = events.iter().find(|e| e["action"] == "fetch" && e["target"]["digest"] == manifest).unwrap();
    assert_eq!(fetched["target"]["tag"], "1");
    assert_eq!(fetched["target"]["size"], img.manifest.len());
    // Unused past the TTL: the tag, the manifest and the blob links go, each said.
    let events = events_when(&recv, "/events", "the eviction's events", |e| {
        has(e, "evict", &manifest)
            && has(e, "evict", &layer)
            && e.iter().any(|e| e["action"] == "evict" && e["target"]["tag"] == "1")
    })
    .await;
    assert!(events.iter().filter(|e| e["action"] == "evict").all(|e| e["mirror"]["upstream"] == "docker.io"));
}

#[test]
fn the_readmes_example_hears_pushes_and_deletes_with_its_header_and_no_pulls() {
    common::procs::require("skopeo");
    let work = tempfile::tempdir().unwrap();
    let w = work.path();
    let layout = busybox_layout(w);
    let recv = Receiver::start();
    let example = common::readme_toml("# Notifications: a deploy bot");
    assert!(example.contains("http://127.0.0.1:9000/events"), "{example}");
    std::fs::write(w.join("berth.toml"), example.replace("http://127.0.0.1:9000/events", &recv.url("/events")))
        .unwrap();
    let (_berth, addr) = berth(&w.join("data"), w, &["--config", w.join("berth.toml").to_str().unwrap()]);
    push_pull_delete(w, &layout, &addr, "team/app");
    let got = recv.wait("/events", "the delete's events", |e| e.iter().any(|e| e["action"] == "delete"));
    assert!(got.iter().any(|e| e["action"] == "push" && e["target"]["tag"] == "v1"), "{got:#?}");
    assert!(got.iter().all(|e| e["action"] != "pull"), "pulls are ignored: {got:#?}");
    let auth = recv.authorizations();
    assert!(!auth.is_empty() && auth.iter().all(|a| a == "Bearer s3cr3t"), "{auth:?}");
}
