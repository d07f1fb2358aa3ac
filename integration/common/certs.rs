//! Test certificates made with openssl: a CA, and server and client
//! certificates it signs (ECDSA P-256, valid for two days).

use std::path::{Path, PathBuf};
use std::process::Command;

use super::procs::{require, run};

pub struct Ca {
    pub dir: PathBuf,
    pub name: String,
}

impl Ca {
    /// A new CA `name` under `dir` (`<name>.crt`, `<name>.key`).
    pub fn new(dir: &Path, name: &str) -> Ca {
        require("openssl");
        std::fs::create_dir_all(dir).unwrap();
        let ca = Ca { dir: dir.to_path_buf(), name: name.to_string() };
        run(Command::new("openssl")
            .args(["req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2"])
            .arg("-keyout")
            .arg(ca.key())
            .arg("-out")
            .arg(ca.cert())
            .args(["-subj", &format!("/CN={name}")]));
        ca
    }

    pub fn cert(&self) -> PathBuf {
        self.dir.join(format!("{}.crt", self.name))
    }

    pub fn key(&self) -> PathBuf {
        self.dir.join(format!("{}.key", self.name))
    }

    /// A certificate for `localhost` and 127.0.0.1 (`server`) or a client
    /// (`client`), as `<dir>/<stem>.crt` and `.key`.
    pub fn issue(&self, stem: &str, usage: &str) -> (PathBuf, PathBuf) {
        let [crt, key, csr, ext] = ["crt", "key", "csr", "ext"].map(|e| self.dir.join(format!("{stem}.{e}")));
        let extensions = match usage {
            "server" => "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n",
            _ => "extendedKeyUsage=clientAuth\n",
        };
        std::fs::write(&ext, extensions).unwrap();
        run(Command::new("openssl")
            .args(["req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"])
            .arg("-keyout")
            .arg(&key)
            .arg("-out")
            .arg(&csr)
            .args(["-subj", &format!("/CN={stem}")]));
        run(Command::new("openssl")
            .args(["x509", "-req", "-days", "2", "-CAcreateserial"])
            .arg("-in")
            .arg(&csr)
            .arg("-CA")
            .arg(self.cert())
            .arg("-CAkey")
            .arg(self.key())
            .arg("-out")
            .arg(&crt)
            .arg("-extfile")
            .arg(&ext));
        (crt, key)
    }
}
