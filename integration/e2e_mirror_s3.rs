//! The `e2e_mirror` suite (integration/suites/e2e_mirror.rs) over the object backend (SeaweedFS; `common::object_store`).

mod common;
#[path = "suites/e2e_mirror.rs"]
mod suite;
