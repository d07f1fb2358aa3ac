//! What this berth serves its sibling mirrors (`mirror::peers`): mirrored
//! content only, never pushed images (a blob pushed content shares with
//! mirrored content is mirrored content too), and a fetch on a sibling's
//! behalf through the mirror as any pull would go (coalesced, verified).

use bytes::Bytes;

use crate::oci::{Digest, ManifestInfo, Reference, RepoName};
use crate::store::ByteStream;

use super::identity::RepoId;
use super::namespace::Class;
use super::{Registry, RegistryError, RegistryResult, Route};

impl Registry {
    /// The siblings' side of peering, when a `peer_token` is set.
    pub fn peers(&self) -> Option<&std::sync::Arc<crate::mirror::peers::Peers>> {
        self.mirror.as_ref()?.peers()
    }

    /// Whether mirrored content links `d` (what a sibling may be given).
    async fn mirrored_has(&self, d: &Digest) -> RegistryResult<bool> {
        let digest = d.clone();
        Ok(!self.core.store.indexed(move |index| index.refs(&digest)).await?.mirrored.is_empty())
    }

    /// As the owner of blob `d` (see `mirror::peers`): who fetches it for
    /// the sibling `asker`: this berth when it is fetching it already, the
    /// sibling whose claim stands, or (`None`) `asker` itself, granted.
    pub fn peer_claim(&self, d: &Digest, asker: &str) -> Option<String> {
        let mirror = self.mirror.as_ref()?;
        let peers = mirror.peers()?;
        if mirror.inflight_blob(d).is_some() {
            return Some(peers.id().to_string());
        }
        peers.claim(d, asker)
    }

    /// Blob `d`'s size and bytes, if mirrored content holds it.
    pub async fn peer_blob(&self, d: &Digest, with_body: bool) -> RegistryResult<Option<(u64, Option<ByteStream>)>> {
        if !self.mirrored_has(d).await? {
            return Ok(None);
        }
        let Some(size) = self.core.store.blob_size(d).await? else { return Ok(None) };
        let body = match with_body {
            true => Some(self.core.store.open_blob(d, 0, None).await?),
            false => None,
        };
        Ok(Some((size, body)))
    }

    /// Manifest `d` (its media type and bytes), if mirrored content holds it.
    pub async fn peer_manifest(&self, d: &Digest) -> RegistryResult<Option<(String, Bytes)>> {
        if !self.mirrored_has(d).await? {
            return Ok(None);
        }
        let Some(bytes) = self.core.store.read_blob_bytes(d).await? else { return Ok(None) };
        if d.check(&bytes).is_err() {
            return Err(RegistryError::Unreadable(format!("stored manifest {d} does not match its digest")));
        }
        let info = ManifestInfo::parse_stored(&bytes).map_err(|e| RegistryError::Unreadable(e.message))?;
        Ok(Some((info.media_type, bytes)))
    }

    /// The mirrored repository `remote` of upstream `host`, for a sibling's
    /// fetch (siblings are trusted with every mirrored repository), resolved
    /// by the name-space policy as any `?ns=` request is: each spelling of
    /// one repository (`index.docker.io`, `alpine` for `library/alpine`) is
    /// that one repository.
    pub fn peer_route(&self, host: &str, remote: &str) -> RegistryResult<Route> {
        let name: RepoName = remote.parse().map_err(|_| {
            crate::oci::ParseError::new(crate::oci::OciCode::NameInvalid, format!("{remote}: not a repository name"))
        })?;
        match self.namespace.classify(&name, Some(host))? {
            Class::Explicit { host, remote } => self.serve_route(RepoId::Mirrored { host, remote }, false),
            _ => Err(RegistryError::NameUnknown(format!("{host} is not mirrored here"))),
        }
    }
}

impl Registry {
    /// The manifest tag `tag` of mirrored repository `remote` of upstream
    /// `host` points to here, as stored (fresh or not): what a sibling whose
    /// upstream is down serves as stale. Asks no upstream.
    pub async fn peer_tag(
        &self,
        host: &str,
        remote: &str,
        tag: &str,
    ) -> RegistryResult<Option<(Digest, String, Bytes)>> {
        let Route::Mirrored(m) = self.peer_route(host, remote)? else { return Ok(None) };
        let tag = Reference::Tag(tag.parse()?);
        match self.local_manifest(&m.storage, &tag).await {
            Ok(found) => Ok(Some((found.digest, found.media_type, found.bytes))),
            Err(RegistryError::ManifestUnknown(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }
}
