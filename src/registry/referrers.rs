//! The referrers API: manifests in a repository whose `subject` is a given
//! digest (the scan is `Core::referrers`).

use std::collections::BTreeMap;

use serde::Serialize;

use crate::oci::Digest;

use super::{Registry, RegistryResult, Route};

/// One entry of the referrers index (an OCI descriptor).
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Referrer {
    pub media_type: String,
    pub digest: String,
    pub size: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub artifact_type: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub annotations: Option<BTreeMap<String, String>>,
}

impl Registry {
    /// Manifests in the repository `route` serves that refer to `subject`,
    /// optionally only those of `artifact_type`, ordered by digest.
    pub async fn referrers(
        &self,
        route: &Route,
        subject: &Digest,
        artifact_type: Option<&str>,
    ) -> RegistryResult<Vec<Referrer>> {
        self.core.referrers(route.storage(), subject, artifact_type).await
    }
}
