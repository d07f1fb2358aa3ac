//! The `e2e_api` suite (integration/suites/e2e_api.rs) over the file tree.

mod common;
#[path = "suites/e2e_api.rs"]
mod suite;
