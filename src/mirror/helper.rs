//! Upstream credentials from a docker credential helper (registry:2's
//! `proxy.exec`): `<helper> get` with the upstream's host on stdin answers
//! JSON `{"Username": …, "Secret": …}`. The answer is used for
//! `credential_lifetime` (asked again at nine tenths of it, so a rotated
//! secret is picked up before the old one lapses) and never logged: errors
//! say what went wrong, never what the helper printed.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Longest wait for a helper.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);

pub struct Helper {
    program: String,
    lifetime: Duration,
    cached: Mutex<Option<(String, String, Instant)>>,
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Answer {
    username: String,
    secret: String,
}

impl Helper {
    /// `name` as docker names helpers (`pass` → `docker-credential-pass`),
    /// or a path.
    pub fn new(name: &str, lifetime: Duration) -> Helper {
        let program = match name.contains('/') || name.starts_with("docker-credential-") {
            true => name.to_string(),
            false => format!("docker-credential-{name}"),
        };
        Helper { program, lifetime, cached: Mutex::new(None) }
    }

    /// (username, secret) for `host`, from the helper or its recent answer.
    pub async fn get(&self, host: &str) -> Result<(String, String), String> {
        if let Some((u, s, at)) = self.cached.lock().unwrap().clone() {
            if at.elapsed() < self.lifetime.mul_f32(0.9) {
                return Ok((u, s));
            }
        }
        let (program, host) = (self.program.clone(), host.to_string());
        let run = tokio::task::spawn_blocking(move || ask(&program, &host));
        let answer = match tokio::time::timeout(HELPER_TIMEOUT, run).await {
            Ok(Ok(answer)) => answer?,
            Ok(Err(e)) => return Err(format!("credential helper {}: {e}", self.program)),
            Err(_) => {
                return Err(format!("credential helper {} did not answer within {HELPER_TIMEOUT:?}", self.program))
            }
        };
        *self.cached.lock().unwrap() = Some((answer.0.clone(), answer.1.clone(), Instant::now()));
        tracing::debug!(helper = %self.program, "upstream credentials obtained from the helper");
        Ok(answer)
    }
}

fn ask(program: &str, host: &str) -> Result<(String, String), String> {
    let mut child = Command::new(program)
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("credential helper {program} cannot be run: {e}"))?;
    // A helper that does not read its stdin may be gone already: its answer counts.
    match child.stdin.take().expect("piped").write_all(host.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            return Err(format!("credential helper {program}: {e}"))
        }
        _ => {}
    }
    let out = child.wait_with_output().map_err(|e| format!("credential helper {program}: {e}"))?;
    if !out.status.success() {
        return Err(format!("credential helper {program} failed ({}) for {host}", out.status));
    }
    let answer: Answer = serde_json::from_slice(&out.stdout)
        .map_err(|_| format!("credential helper {program} answered something other than its JSON for {host}"))?;
    Ok((answer.username, answer.secret))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[actix_web::test]
    async fn a_helper_is_asked_once_per_lifetime_and_its_output_never_in_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let calls = dir.path().join("calls");
        let script = dir.path().join("docker-credential-test");
        std::fs::write(
            &script,
            format!(
                "#!/bin/sh\nread host\necho \"$1 $host\" >> {}\nprintf '{{\"ServerURL\":\"%s\",\"Username\":\"u\",\"Secret\":\"s3cret\"}}' \"$host\"\n",
                calls.display()
            ),
        )
        .unwrap();
        std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
        let h = Helper::new(script.to_str().unwrap(), Duration::from_secs(3600));
        assert_eq!(h.get("registry.corp:5000").await.unwrap(), ("u".into(), "s3cret".into()));
        assert_eq!(h.get("registry.corp:5000").await.unwrap().1, "s3cret");
        assert_eq!(std::fs::read_to_string(&calls).unwrap(), "get registry.corp:5000\n", "asked once");

        std::fs::write(&script, "#!/bin/sh\necho 'not json, but a secret: hunter2'\n").unwrap();
        let e = Helper::new(script.to_str().unwrap(), Duration::ZERO).get("h").await.unwrap_err();
        assert!(e.contains("other than its JSON") && !e.contains("hunter2"), "{e}");
        assert_eq!(Helper::new("nonexistent-helper", Duration::ZERO).program, "docker-credential-nonexistent-helper");
    }
}
