//! The `e2e_mirror` suite (integration/suites/e2e_mirror.rs) over the file tree.

mod common;
#[path = "suites/e2e_mirror.rs"]
mod suite;
