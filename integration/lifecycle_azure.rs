//! The `lifecycle` suite (integration/suites/lifecycle.rs) over Azure Blob Storage (Azurite; `common::object_store`).

mod common;
#[path = "suites/lifecycle.rs"]
mod suite;
