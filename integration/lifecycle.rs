//! The `lifecycle` suite (integration/suites/lifecycle.rs) over the file tree.

mod common;
#[path = "suites/lifecycle.rs"]
mod suite;
