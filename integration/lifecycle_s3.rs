//! The `lifecycle` suite (integration/suites/lifecycle.rs) over the object backend (SeaweedFS; `common::object_store`).

mod common;
#[path = "suites/lifecycle.rs"]
mod suite;
