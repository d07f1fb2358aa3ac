//! The `e2e_api` suite (integration/suites/e2e_api.rs) over the object backend (SeaweedFS; `common::object_store`).

mod common;
#[path = "suites/e2e_api.rs"]
mod suite;
