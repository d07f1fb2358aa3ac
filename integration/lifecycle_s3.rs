//! The `lifecycle` suite (integration/suites/lifecycle.rs) over the object backend (SeaweedFS; `common::on_s3`).

mod common;
#[path = "suites/lifecycle.rs"]
mod suite;
