//! The `e2e_mirror` suite (integration/suites/e2e_mirror.rs) over the object backend (SeaweedFS; `common::on_s3`).

mod common;
#[path = "suites/e2e_mirror.rs"]
mod suite;
