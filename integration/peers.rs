//! Sibling mirrors (README: "Sibling mirrors"): three berths on loopback,
//! each with its own data directory, siblings of each other (the README's
//! example), their upstream behind a simulated 1 Gbit/s, 20 ms link
//! (`integration/bench/wan_link.py`). Cold pulls through one, then the
//! others, and concurrent cold pulls spread over all three, fetch each blob
//! over the link once; siblings that lie, stall or die mid-transfer (a fake
//! one, and a real berth SIGKILLed while relaying) cost their timeout and
//! every pull completes with the right digests. With the upstream down, a tag
//! resolves at a sibling; siblings see nothing without the token and no
//! pushed content with it; siblings listed by an SRV record find each other.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mirroring::{layer, pull};
use common::procs::{berth_at, free_port, Proc};
use common::upstream::{Auth, FakeUpstream, Image};
use common::{Client, Digest, OCI_MANIFEST};

const TOKEN: &str = "change-me-to-a-long-random-secret";

/// The simulated WAN link (`mbit` Mbit/s, 20 ms) in front of `target`; its address.
fn wan(work: &Path, target: &str, mbit: u32) -> (Proc, String) {
    let port = free_port();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("integration/bench/wan_link.py");
    let mut cmd = std::process::Command::new("python3");
    cmd.arg(script).args([&port.to_string(), target, &mbit.to_string(), "20"]);
    let mut p = Proc::spawn("wan", &mut cmd, work.join(format!("wan-{port}.log")));
    let addr = format!("127.0.0.1:{port}");
    p.wait_http(&addr);
    (p, addr)
}

/// Berths siblings of each other (the README's example), each with its own
/// data directory, mirroring docker.io from `upstream`.
fn siblings(work: &Path, upstream: &str, n: usize, extra_peers: &[String]) -> Vec<(Proc, String)> {
    let addrs: Vec<String> = (0..n).map(|_| format!("127.0.0.1:{}", free_port())).collect();
    let example = common::readme_toml("# berth.toml: one of three sites that share what they fetch");
    let peers: Vec<String> =
        addrs.iter().map(|a| format!("\"http://{a}\"")).chain(extra_peers.iter().map(|p| format!("\"{p}\""))).collect();
    let cfg = example
        .replace(
            r#"peers = ["http://berth-a.lan:5000", "http://berth-b.lan:5000", "http://berth-c.lan:5000"]"#,
            &format!("peers = [{}]", peers.join(", ")),
        )
        .replace("https://registry-1.docker.io", &format!("http://{upstream}"));
    assert!(cfg.contains(TOKEN) && cfg.contains(upstream), "{cfg}");
    start_sites(work, &addrs, &cfg)
}

/// A berth on each of `addrs` with configuration `cfg`, each with its own data directory.
fn start_sites(work: &Path, addrs: &[String], cfg: &str) -> Vec<(Proc, String)> {
    let path = work.join(format!("siblings-{}.toml", addrs[0]));
    std::fs::write(&path, cfg).unwrap();
    addrs
        .iter()
        .enumerate()
        .map(|(i, a)| {
            berth_at(a, &work.join(format!("site{i}-{a}")), work, &["--config", path.to_str().unwrap()], |_| {})
        })
        .collect()
}

/// Sibling sites started for a test (the README's example), stopped and
/// their directory removed when dropped.
struct Sites {
    procs: Vec<(Proc, String)>,
    _wan: Option<Proc>,
    _work: tempfile::TempDir,
}

impl Sites {
    /// `n` siblings mirroring `up` (behind the simulated link at `mbit`
    /// Mbit/s, if given), with `extra` peers listed besides them.
    async fn start(up: &FakeUpstream, n: usize, extra: Vec<String>, mbit: Option<u32>) -> Sites {
        let up_addr = up.url.trim_start_matches("http://").to_string();
        actix_rt::task::spawn_blocking(move || {
            let work = tempfile::tempdir().unwrap();
            let (wan, target) = match mbit {
                Some(m) => {
                    let (p, addr) = wan(work.path(), &up_addr, m);
                    (Some(p), addr)
                }
                None => (None, up_addr),
            };
            let procs = siblings(work.path(), &target, n, &extra);
            Sites { procs, _wan: wan, _work: work }
        })
        .await
        .unwrap()
    }

    fn client(&self, i: usize) -> Client {
        Client::new(&format!("http://{}", self.procs[i].1))
    }
}

fn upstream_gets(up: &FakeUpstream, image: &Image) -> Vec<usize> {
    std::iter::once(&image.config).chain(&image.layers).map(|d| up.count("GET", &format!("/blobs/{d}"))).collect()
}

#[actix_rt::test]
async fn a_cold_image_crosses_the_link_once_for_three_sites() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let first = up.add_image("library/first", "1", &[layer(3 << 20, 1), layer(3 << 20, 2), layer(2 << 20, 3)]);
    let spread = up.add_image("library/spread", "1", &[layer(4 << 20, 4), layer(4 << 20, 5)]);
    let sites = Sites::start(&up, 3, vec![], Some(1000)).await;
    let clients: Vec<Client> = (0..3).map(|i| sites.client(i)).collect();

    // One site after the other: each blob crosses the link once.
    for c in &clients {
        pull(c, "first", "1", &first).await;
    }
    assert_eq!(upstream_gets(&up, &first), vec![1; 4], "config and layers once over the link each");
    // Each blob was fetched upstream by one site (the one asked, or the one whose turn it
    // was); the other two got it from a sibling.
    let mut received = 0;
    for c in &clients {
        received += peer_received(c).await;
    }
    assert!(received >= 2 * (8 << 20), "two of three sites got the layers from a sibling: {received}");

    // Eight cold pulls at once, spread over the three sites.
    let pulls = (0..8).map(|i| {
        let c = &clients[i % 3];
        let spread = &spread;
        async move { pull(c, "spread", "1", spread).await }
    });
    futures::future::join_all(pulls).await;
    assert_eq!(upstream_gets(&up, &spread), vec![1; 3], "each blob once over the link for 8 concurrent pulls");
    drop(sites);
    up.stop().await;
}

/// Bytes a site received from its siblings, from its /metrics.
async fn peer_received(c: &Client) -> u64 {
    let metrics = c.get("/metrics").await;
    let text = String::from_utf8(metrics.body.to_vec()).unwrap();
    text.lines().find_map(|l| l.strip_prefix("berth_peer_received_bytes_total ")).and_then(|v| v.parse().ok()).unwrap()
}

/// How a fake sibling misbehaves once asked for a blob's bytes.
#[derive(Clone, Copy)]
enum Fault {
    /// The right length, wrong bytes.
    Lies,
    /// Half the bytes, then silence.
    Stalls,
    /// Half the bytes, then the connection closes (a sibling killed mid-transfer).
    Dies,
}

/// A sibling that says it has every blob of `sizes` and then misbehaves.
fn bad_sibling(fault: Fault, sizes: Vec<(Digest, usize)>) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut s) = stream else { continue };
            let sizes = sizes.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                let mut line = String::new();
                if r.read_line(&mut line).is_err() {
                    return;
                }
                loop {
                    let mut h = String::new();
                    if r.read_line(&mut h).is_err() || h == "\r\n" || h.is_empty() {
                        break;
                    }
                }
                let mut parts = line.split_whitespace();
                let (method, path) = (parts.next().unwrap_or(""), parts.next().unwrap_or(""));
                let d = path.rsplit('/').next().unwrap_or("").split('?').next().unwrap_or("");
                let Some(&(_, size)) = sizes.iter().find(|(x, _)| x.to_string() == d) else {
                    let _ = write!(s, "HTTP/1.1 404 Not Found\r\nX-Berth-Peer-Id: bad-{addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
                    return;
                };
                let _ = write!(
                    s,
                    "HTTP/1.1 200 OK\r\nX-Berth-Peer-Id: bad-{addr}\r\nContent-Length: {size}\r\nConnection: close\r\n\r\n"
                );
                if method == "HEAD" {
                    return;
                }
                match fault {
                    Fault::Lies => {
                        let _ = s.write_all(&vec![0x5a; size]);
                    }
                    Fault::Stalls => {
                        let _ = s.write_all(&vec![0x5a; size / 2]);
                        std::thread::sleep(Duration::from_secs(60));
                    }
                    Fault::Dies => {
                        let _ = s.write_all(&vec![0x5a; size / 2]);
                    }
                }
                let _ = r.read(&mut [0u8; 1]);
            });
        }
    });
    format!("http://{addr}")
}

#[actix_rt::test]
async fn siblings_that_lie_stall_or_die_cost_their_timeout_and_every_pull_completes() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/app", "1", &[layer(2 << 20, 7), layer(1 << 20, 8)]);
    let sizes: Vec<(Digest, usize)> = [(image.config.clone(), 0usize)]
        .into_iter()
        .chain(image.layers.iter().cloned().zip([2usize << 20, 1 << 20]))
        .filter(|(_, s)| *s > 0)
        .collect();
    let bad: Vec<String> =
        [Fault::Lies, Fault::Stalls, Fault::Dies].into_iter().map(|f| bad_sibling(f, sizes.clone())).collect();
    let sites = Sites::start(&up, 1, bad, None).await;
    let c = sites.client(0);
    let started = Instant::now();
    pull(&c, "app", "1", &image).await;
    let took = started.elapsed();
    // Each bad sibling costs at most its timeout (1 s in the example) a time it is asked; it is
    // asked at most twice (as a holder, then as the owner) before it is skipped.
    assert!(took < Duration::from_secs(12), "{took:?}");
    assert_eq!(upstream_gets(&up, &image), vec![1; 3], "the upstream served what no sibling could");
    let metrics = String::from_utf8(c.get("/metrics").await.body.to_vec()).unwrap();
    let failures: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("berth_peer_failures_total "))
        .and_then(|v| v.parse().ok())
        .unwrap();
    assert!(failures >= 3, "each bad sibling was caught: {failures}");
    // Skipped for a while: the next cold pull asks none of them.
    let again = up.add_image("library/again", "1", &[layer(1 << 20, 9)]);
    let started = Instant::now();
    pull(&c, "again", "1", &again).await;
    assert!(started.elapsed() < Duration::from_secs(3), "penalized siblings were asked again");
    drop(sites);
    up.stop().await;
}

#[actix_rt::test]
async fn siblings_get_mirrored_content_only_and_only_with_the_token() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/shared", "1", &[layer(1 << 20, 11)]);
    let sites = Sites::start(&up, 1, vec![], None).await;
    let base = format!("http://{}", sites.procs[0].1);
    let c = Client::new(&base);
    pull(&c, "shared", "1", &image).await;
    let (_, pushed) = c.push_image("team/private", "1", b"pushed layer, not for siblings").await;
    let pushed_layer = Digest::sha256_of(b"pushed layer, not for siblings");

    let sibling = |path: String, token: Option<&'static str>| {
        let c = Client::new(&base);
        async move {
            let headers: Vec<(&str, &str)> = token.map(|t| ("X-Berth-Peer-Token", t)).into_iter().collect();
            c.req("GET", &path, &headers, Vec::new()).await
        }
    };
    let mirrored = format!("/_berth/peer/blobs/{}", image.layers[0]);
    let r = sibling(mirrored.clone(), Some(TOKEN)).await;
    assert_eq!(r.status, 200);
    assert_eq!(Digest::sha256_of(&r.body), image.layers[0]);
    assert!(r.header("x-berth-peer-id").is_some(), "a sibling names itself");
    // Without the token, or with another, nothing is here at all.
    for token in [None, Some("change-me-to-a-long-random-secreT")] {
        let r = sibling(mirrored.clone(), token).await;
        assert_eq!((r.status, r.header("x-berth-peer-id")), (404, None), "token {token:?}");
    }
    // Pushed content is not for siblings, even with the token.
    for path in [format!("/_berth/peer/blobs/{pushed_layer}"), format!("/_berth/peer/manifests/{pushed}")] {
        assert_eq!(sibling(path.clone(), Some(TOKEN)).await.status, 404, "{path}");
    }
    assert_eq!(c.get(&format!("/v2/team/private/blobs/{pushed_layer}")).await.status, 200, "pushed and there");
    // A sibling's tag request names one repository in any of its spellings.
    for (ns, remote) in [
        ("docker.io", "library/shared"),
        ("docker.io", "shared"),
        ("index.docker.io", "library/shared"),
        ("registry-1.docker.io", "shared"),
    ] {
        let r = sibling(format!("/_berth/peer/tag?ns={ns}&remote={remote}&tag=1"), Some(TOKEN)).await;
        assert_eq!(
            (r.status, r.header("docker-content-digest")),
            (200, Some(image.digest.to_string().as_str())),
            "{ns} {remote}"
        );
    }
    // The pushed repository is no mirrored one, however it is spelled.
    for (ns, remote) in [("docker.io", "team/private"), ("quay.io", "team/private")] {
        let r = sibling(format!("/_berth/peer/tag?ns={ns}&remote={remote}&tag=1"), Some(TOKEN)).await;
        assert_eq!(r.status, 404, "{ns} {remote}");
    }
    drop(sites);
    up.stop().await;
}

#[actix_rt::test]
async fn with_the_upstream_down_a_tag_resolves_at_a_sibling_as_stale() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/tool", "1", &[layer(1 << 20, 12)]);
    let sites = Sites::start(&up, 2, vec![], None).await;
    let (a, b) = (sites.client(0), sites.client(1));
    pull(&a, "tool", "1", &image).await;
    up.stop().await;
    // A manifest by digest is the same from anywhere: B gets it from A.
    let by_digest =
        b.req("GET", &format!("/v2/tool/manifests/{}", image.digest), &[("Accept", OCI_MANIFEST)], "").await;
    assert_eq!((by_digest.status, &by_digest.body), (200, &image.manifest));
    // B never saw the tag; its upstream is gone; A has it.
    let r = b.get("/v2/tool/manifests/1").await;
    assert_eq!(r.status, 200, "{}", r.text());
    let stale = r.header("x-berth-stale").map(str::to_string);
    assert!(stale.as_deref().is_some_and(|w| w.contains("sibling")), "served as stale: {stale:?}");
    pull(&b, "tool", "1", &image).await;
    // What no sibling has is still the upstream's failure.
    let r = b.get("/v2/other/manifests/1").await;
    assert!(r.status >= 500, "{}", r.status);
    drop(sites);
}

/// A name server on loopback (UDP) answering the SRV query for `name` with
/// one record per address of `addrs` (target `siteN.consul.`, its port),
/// and the A query for each target with 127.0.0.1; its address.
fn fake_dns(name: &str, addrs: &[String]) -> String {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let at = socket.local_addr().unwrap().to_string();
    let name = name.to_ascii_lowercase();
    let ports: Vec<u16> = addrs.iter().map(|a| a.rsplit(':').next().unwrap().parse().unwrap()).collect();
    let encode = |n: &str| -> Vec<u8> {
        let mut out = Vec::new();
        for label in n.trim_end_matches('.').split('.') {
            out.push(label.len() as u8);
            out.extend_from_slice(label.as_bytes());
        }
        out.push(0);
        out
    };
    std::thread::spawn(move || {
        let mut buf = [0u8; 1500];
        loop {
            let Ok((n, from)) = socket.recv_from(&mut buf) else { return };
            let q = &buf[..n];
            // The question: labels up to a zero, then type and class.
            let (mut i, mut labels) = (12, Vec::new());
            while i < q.len() && q[i] != 0 {
                let len = q[i] as usize;
                labels.push(String::from_utf8_lossy(&q[i + 1..i + 1 + len]).to_ascii_lowercase());
                i += 1 + len;
            }
            let qname = labels.join(".");
            let qtype = u16::from_be_bytes([q[i + 1], q[i + 2]]);
            let question = &q[12..i + 5];
            let mut answers: Vec<(u16, Vec<u8>)> = Vec::new();
            if qtype == 33 && qname == name {
                for (k, port) in ports.iter().enumerate() {
                    let mut rdata = vec![0, 10, 0, 10];
                    rdata.extend_from_slice(&port.to_be_bytes());
                    rdata.extend(encode(&format!("site{k}.consul")));
                    answers.push((33, rdata));
                }
            } else if qtype == 1 && qname.starts_with("site") && qname.ends_with(".consul") {
                answers.push((1, vec![127, 0, 0, 1]));
            }
            let mut r = vec![q[0], q[1], 0x85, 0x80, 0, 1];
            r.extend_from_slice(&(answers.len() as u16).to_be_bytes());
            r.extend_from_slice(&[0, 0, 0, 0]);
            r.extend_from_slice(question);
            for (t, rdata) in answers {
                r.extend_from_slice(&[0xc0, 0x0c]);
                r.extend_from_slice(&t.to_be_bytes());
                r.extend_from_slice(&[0, 1, 0, 0, 0, 5]);
                r.extend_from_slice(&(rdata.len() as u16).to_be_bytes());
                r.extend(rdata);
            }
            let _ = socket.send_to(&r, from);
        }
    });
    at
}

#[actix_rt::test]
async fn siblings_listed_by_a_dns_srv_record_find_each_other() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/found", "1", &[layer(1 << 20, 13), layer(1 << 20, 14)]);
    let up_url = up.url.clone();
    let sites = actix_rt::task::spawn_blocking(move || {
        let work = tempfile::tempdir().unwrap();
        let addrs: Vec<String> = (0..2).map(|_| format!("127.0.0.1:{}", free_port())).collect();
        let dns = fake_dns("berth.service.consul", &addrs);
        let example = common::readme_toml("# berth.toml: siblings listed by Consul's DNS");
        assert!(example.contains("127.0.0.1:8600"), "{example}");
        let cfg = example.replace("127.0.0.1:8600", &dns)
            + &format!("\n[[mirror.upstreams]]\nhost = \"docker.io\"\nurl = \"{up_url}\"\n");
        let procs = start_sites(work.path(), &addrs, &cfg);
        Sites { procs, _wan: None, _work: work }
    })
    .await
    .unwrap();
    let (a, b) = (sites.client(0), sites.client(1));
    pull(&a, "found", "1", &image).await;
    pull(&b, "found", "1", &image).await;
    assert_eq!(upstream_gets(&up, &image), vec![1; 3], "the second site found the first by its SRV record");
    // One of the two fetched each layer; the other got it from its sibling.
    assert!(peer_received(&a).await + peer_received(&b).await >= 2 << 20);
    drop(sites);
    up.stop().await;
}

/// Waits (polling, up to 30 s) until `ready` says so.
async fn until(what: &str, mut ready: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready().await {
        assert!(Instant::now() < deadline, "gave up waiting: {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

#[actix_rt::test]
async fn a_sibling_killed_while_relaying_costs_a_refetch_not_the_pull() {
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/big", "1", &[layer(24 << 20, 15)]);
    let blob = image.layers[0].clone();
    // 100 Mbit/s: the blob takes about two seconds to cross the link.
    let mut sites = Sites::start(&up, 2, vec![], Some(100)).await;
    let b = sites.client(1);
    let path = format!("/v2/big/blobs/{blob}");
    // Site A fetches the blob; once its fetch is under way, site B misses it too
    // and is told to join A's fetch.
    let a_pull = actix_rt::spawn({
        let (a, path) = (sites.client(0), path.clone());
        async move { a.get_hashed(&path).await }
    });
    until("A fetching upstream", async || up.count("GET", &format!("/blobs/{blob}")) == 1).await;
    let b_pull = actix_rt::spawn({
        let (b, path) = (sites.client(1), path.clone());
        async move { b.get_hashed(&path).await }
    });
    until("B receiving from A", async || peer_received(&b).await > 0).await;
    // A dies mid-relay.
    sites.procs.remove(0).0.kill();
    let started = Instant::now();
    let got = b_pull.await.unwrap();
    assert_eq!(got.map(|(status, d, _)| (status, d)), Ok((200, blob.clone())), "B's client got the blob");
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    assert_eq!(up.count("GET", &format!("/blobs/{blob}")), 2, "B fetched it itself once A was gone");
    let a_result = a_pull.await.unwrap();
    assert!(a_result.is_err() || a_result.is_ok_and(|(s, d, _)| s != 200 || d != blob), "A's own client saw it die");
    drop(sites);
    up.stop().await;
}

/// `curl` of `https://addr{path}` trusting `ca`, with `extra` arguments: (status, body).
fn curl_get(addr: &str, ca: &Path, extra: &[&str], path: &str) -> (u16, Vec<u8>) {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--max-time", "30", "-w", "\n%{http_code}", "--cacert"])
        .arg(ca)
        .args(extra)
        .arg(format!("https://{addr}{path}"))
        .output()
        .unwrap();
    assert!(out.status.success(), "curl {path}: {}", String::from_utf8_lossy(&out.stderr));
    let split = out.stdout.iter().rposition(|&b| b == b'\n').unwrap();
    let status = String::from_utf8_lossy(&out.stdout[split + 1..]).parse().unwrap();
    (status, out.stdout[..split].to_vec())
}

#[actix_rt::test]
async fn siblings_that_know_each_other_by_certificate() {
    common::procs::require("curl");
    let up = FakeUpstream::start(Auth::Anonymous).await;
    let image = up.add_image("library/certified", "1", &[layer(1 << 20, 16), layer(1 << 20, 17)]);
    let up_url = up.url.clone();
    let (_work, sites, ca, stranger) = actix_rt::task::spawn_blocking(move || {
        let work = tempfile::tempdir().unwrap();
        let ca = common::certs::Ca::new(&work.path().join("tls"), "siblings-ca");
        let other = common::certs::Ca::new(&work.path().join("other"), "other-ca");
        let stranger = other.issue("stranger", "client");
        let ports: Vec<u16> = (0..2).map(|_| free_port()).collect();
        let example = common::readme_toml("# berth.toml: siblings that know each other by certificate");
        let sites: Vec<(Proc, String)> = ports
            .iter()
            .enumerate()
            .map(|(i, port)| {
                let (server_crt, server_key) = ca.issue(&format!("server{i}"), "server");
                let (peer_crt, peer_key) = ca.issue(&format!("peer{i}"), "client");
                let peers: Vec<String> = ports.iter().map(|p| format!("\"https://localhost:{p}\"")).collect();
                let cfg = example
                    .replace("/etc/berth/tls/server.crt", server_crt.to_str().unwrap())
                    .replace("/etc/berth/tls/server.key", server_key.to_str().unwrap())
                    .replace("/etc/berth/tls/peer.crt", peer_crt.to_str().unwrap())
                    .replace("/etc/berth/tls/peer.key", peer_key.to_str().unwrap())
                    .replace("/etc/berth/tls/siblings-ca.crt", ca.cert().to_str().unwrap())
                    .replace(
                        r#"peers = ["https://berth-a.lan:5000", "https://berth-b.lan:5000"]"#,
                        &format!("peers = [{}]", peers.join(", ")),
                    )
                    .replace("https://registry-1.docker.io", &up_url);
                assert!(!cfg.contains("/etc/berth") && !cfg.contains("berth-a.lan"), "{cfg}");
                let path = work.path().join(format!("site{i}.toml"));
                std::fs::write(&path, cfg).unwrap();
                let addr = format!("127.0.0.1:{port}");
                let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_berth"));
                cmd.args(["serve", "--listen", &addr, "--config"])
                    .arg(&path)
                    .arg("--data")
                    .arg(work.path().join(format!("data{i}")))
                    .env("RUST_LOG", "info");
                let mut p = Proc::spawn("berth", &mut cmd, work.path().join(format!("site{i}.log")));
                p.wait_until("listening", Duration::from_secs(30), || std::net::TcpStream::connect(&addr).is_ok());
                (p, format!("localhost:{port}"))
            })
            .collect();
        (work, sites, ca.cert(), stranger)
    })
    .await
    .unwrap();
    let blobs: Vec<Digest> = std::iter::once(&image.config).chain(&image.layers).cloned().collect();
    let pull_through = |addr: String, ca: std::path::PathBuf, blobs: Vec<Digest>| {
        actix_rt::task::spawn_blocking(move || {
            for d in &blobs {
                let (status, body) = curl_get(&addr, &ca, &[], &format!("/v2/certified/blobs/{d}"));
                assert_eq!((status, Digest::sha256_of(&body)), (200, d.clone()), "a registry client, no certificate");
            }
        })
    };
    pull_through(sites[0].1.clone(), ca.clone(), blobs.clone()).await.unwrap();
    pull_through(sites[1].1.clone(), ca.clone(), blobs.clone()).await.unwrap();
    assert_eq!(upstream_gets(&up, &image), vec![1; 3], "the second site got every blob from the first");

    // Only a certificate from the siblings' CA opens the sibling endpoints.
    let (addr, layer) = (sites[0].1.clone(), image.layers[0].clone());
    let ca2 = ca.clone();
    let tried = actix_rt::task::spawn_blocking(move || {
        let path = format!("/_berth/peer/blobs/{layer}");
        let dir = ca2.parent().unwrap().to_path_buf();
        let (peer_crt, peer_key) = (dir.join("peer1.crt"), dir.join("peer1.key"));
        let sibling =
            curl_get(&addr, &ca2, &["--cert", peer_crt.to_str().unwrap(), "--key", peer_key.to_str().unwrap()], &path)
                .0;
        let nobody = curl_get(&addr, &ca2, &[], &path).0;
        (sibling, nobody)
    })
    .await
    .unwrap();
    assert_eq!(tried, (200, 404), "a sibling's certificate opens it; no certificate does not");
    // A client certificate from another CA fails the handshake itself.
    let (addr, ca2) = (sites[0].1.clone(), ca.clone());
    let refused = actix_rt::task::spawn_blocking(move || {
        std::process::Command::new("curl")
            .args(["-sS", "--max-time", "10", "--cacert"])
            .arg(&ca2)
            .arg("--cert")
            .arg(&stranger.0)
            .arg("--key")
            .arg(&stranger.1)
            .arg(format!("https://{addr}/_berth/peer/blobs/{}", Digest::sha256_of(b"x")))
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(!refused.status.success(), "a stranger's certificate is refused");
    drop(sites);
    up.stop().await;
}
