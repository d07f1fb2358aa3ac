//! A notification receiver: an HTTP/1.1 server on loopback that keeps every
//! envelope POSTed to it, by path, and can be told to answer 503 (down).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

#[derive(Default)]
struct State {
    /// (path, event) in arrival order.
    events: Mutex<Vec<(String, Value)>>,
    /// Envelopes refused while down.
    refused: Mutex<usize>,
    down: AtomicBool,
    /// Set on an envelope whose Content-Type is not registry:2's.
    wrong_type: Mutex<Option<String>>,
    /// The `Authorization` header of every accepted envelope.
    authorizations: Mutex<Vec<String>>,
}

pub struct Receiver {
    pub addr: String,
    state: Arc<State>,
}

impl Receiver {
    pub fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let state = Arc::new(State::default());
        let s = state.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(conn) = conn else { continue };
                let s = s.clone();
                std::thread::spawn(move || serve(conn, &s));
            }
        });
        Receiver { addr, state }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// While down, every envelope is answered 503 and dropped.
    pub fn set_down(&self, down: bool) {
        self.state.down.store(down, Ordering::SeqCst);
    }

    /// The `Authorization` header each accepted envelope came with.
    pub fn authorizations(&self) -> Vec<String> {
        self.state.authorizations.lock().unwrap().clone()
    }

    pub fn refused(&self) -> usize {
        *self.state.refused.lock().unwrap()
    }

    /// The events received at `path`, in order.
    pub fn events(&self, path: &str) -> Vec<Value> {
        assert_eq!(*self.state.wrong_type.lock().unwrap(), None, "an envelope with the wrong Content-Type");
        self.state.events.lock().unwrap().iter().filter(|(p, _)| p == path).map(|(_, e)| e.clone()).collect()
    }

    /// Waits until `ready` holds for the events at `path` (30 s at most).
    pub fn wait(&self, path: &str, what: &str, ready: impl Fn(&[Value]) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let events = self.events(path);
            if ready(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "{what}: not within 30 s; received at {path}: {events:#?}");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn serve(conn: std::net::TcpStream, s: &State) {
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut out = conn;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let (mut length, mut content_type, mut authorization) = (0usize, String::new(), String::new());
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                match k.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = v.trim().parse().unwrap_or(0),
                    "content-type" => content_type = v.trim().to_string(),
                    "authorization" => authorization = v.trim().to_string(),
                    _ => {}
                }
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        if s.down.load(Ordering::SeqCst) {
            *s.refused.lock().unwrap() += 1;
            let _ = out.write_all(b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n\r\n");
            continue;
        }
        if content_type != "application/vnd.docker.distribution.events.v1+json" {
            *s.wrong_type.lock().unwrap() = Some(content_type);
        }
        s.authorizations.lock().unwrap().push(authorization);
        if let Ok(envelope) = serde_json::from_slice::<Value>(&body) {
            let mut events = s.events.lock().unwrap();
            for e in envelope["events"].as_array().cloned().unwrap_or_default() {
                events.push((path.clone(), e));
            }
        }
        if out.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n").is_err() {
            return;
        }
    }
}
