//! The pages, as HTML (maud: compiled templates that escape every value).
//! No script anywhere: every page works with JavaScript off, and every asset
//! is served by berth itself.

use std::time::SystemTime;

use maud::{html, Markup, DOCTYPE};
use percent_encoding::{utf8_percent_encode, NON_ALPHANUMERIC};

use super::format::{ago, bytes, short_digest, utc};
use crate::registry::browse::{Kind, MirrorOverview, Page, RepoRow, TagDetails, TagRow};
use crate::traffic::Bucket;

/// Who is looking, for the header.
pub struct Viewer<'a> {
    pub user: Option<&'a str>,
    /// Whether the registry asks for a login at all.
    pub auth: bool,
}

/// `s` percent-encoded for a query string.
pub(super) fn q(s: &str) -> String {
    utf8_percent_encode(s, NON_ALPHANUMERIC).to_string()
}

pub fn layout(title: &str, viewer: &Viewer, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · berth" }
                link rel="stylesheet" href="/ui/static/style.css";
            }
            body {
                header {
                    a.brand href="/ui/" { "berth" }
                    nav { a href="/ui/" { "Repositories" } " " a href="/ui/mirror" { "Mirror" } " " a href="/ui/housekeeping" { "Housekeeping" } }
                    span.viewer {
                        @if let Some(user) = viewer.user {
                            "Signed in as " strong { (user) }
                        } @else if viewer.auth {
                            a #login href="/ui/login" { "Log in" }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn when(t: Option<SystemTime>, now: SystemTime) -> Markup {
    html! {
        @match t {
            Some(t) => time datetime=(utc(t)) title=(utc(t)) { (ago(t, now)) },
            None => span.none { "—" },
        }
    }
}

fn pagination(page_link: impl Fn(usize) -> String, page: usize, pages: usize, total: usize, what: &str) -> Markup {
    html! {
        nav.pages aria-label="pages" {
            span.count { (total) " " (what) }
            @if pages > 1 {
                @if page > 1 { a rel="prev" href=(page_link(page - 1)) { "← Previous" } }
                span.at { "Page " (page) " of " (pages) }
                @if page < pages { a rel="next" href=(page_link(page + 1)) { "Next →" } }
            }
        }
    }
}

/// What the repository list is filtered by.
pub struct ListFilter<'a> {
    pub search: &'a str,
    /// `pushed`, an upstream host, or empty for all.
    pub kind: &'a str,
}

impl ListFilter<'_> {
    fn link(&self, kind: &str, page: usize) -> String {
        let mut out = format!("/ui/?q={}", q(self.search));
        if !kind.is_empty() {
            out.push_str(&format!("&kind={}", q(kind)));
        }
        if page > 1 {
            out.push_str(&format!("&page={page}"));
        }
        out
    }
}

/// `/ui/`: the repositories, pushed and mirrored (by upstream), with search.
pub fn repositories(
    viewer: &Viewer,
    filter: &ListFilter,
    counts: &(usize, std::collections::BTreeMap<String, usize>),
    page: &Page<std::sync::Arc<RepoRow>>,
) -> Markup {
    let now = SystemTime::now();
    let (pushed, mirrored) = counts;
    let tab = |kind: &str, label: String| {
        html! {
            @if filter.kind == kind { strong.tab { (label) } }
            @else { a.tab href=(filter.link(kind, 1)) { (label) } }
        }
    };
    let body = html! {
        h1 { "Repositories" }
        form.search method="get" action="/ui/" role="search" {
            input type="search" name="q" value=(filter.search) placeholder="Search by name" aria-label="Search by name";
            @if !filter.kind.is_empty() { input type="hidden" name="kind" value=(filter.kind); }
            button type="submit" { "Search" }
        }
        div.tabs {
            (tab("", format!("All ({})", pushed + mirrored.values().sum::<usize>())))
            (tab("pushed", format!("Pushed ({pushed})")))
            @for (host, n) in mirrored { (tab(host, format!("Mirrored from {host} ({n})"))) }
        }
        @if page.items.is_empty() {
            p.empty { @if filter.search.is_empty() { "No repositories yet." } @else { "No repository matches." } }
        } @else {
            table #repositories {
                thead { tr { th { "Name" } th { "Source" } th.num { "Tags" } th.num { "Size" } th { "Last push" } th { "Last pull" } } }
                tbody {
                    @for r in &page.items {
                        tr.repo {
                            td.name {
                                a href=(format!("/ui/repo?name={}", q(&r.name))) { (r.name) }
                                @if r.pinned { " " span.pin title="Pinned: never expires" { "pinned" } }
                            }
                            td.source { @match &r.kind { Kind::Pushed => "pushed", Kind::Mirrored(h) => { "mirror of " (h) } } }
                            td.num.tags { (r.tags) }
                            td.num.size data-bytes=(r.bytes) { (bytes(r.bytes)) }
                            td.pushed { (when(r.last_push, now)) }
                            td.pulled { (when(r.last_pull, now)) }
                        }
                    }
                }
            }
        }
        (pagination(|p| filter.link(filter.kind, p), page.page, page.pages, page.total, "repositories"))
    };
    layout("Repositories", viewer, body)
}

fn pull_commands(host: &str, name: &str, reference: &str) -> Markup {
    let image = format!("{host}/{name}{reference}");
    html! {
        div.commands {
            label { "Pull" }
            pre { code.pull { "docker pull " (image) } }
            label { "Copy" }
            pre { code.copy { "skopeo copy docker://" (image) " oci:" (name.rsplit('/').next().unwrap_or(name)) } }
        }
    }
}

/// What the repository page shows besides its tags.
pub struct RepoView<'a> {
    pub host: &'a str,
    pub name: &'a str,
    /// What was just done (a deleted tag).
    pub notice: Option<&'a str>,
    /// The signature policy's latest decision on one of its images.
    pub signature: Option<crate::registry::trust::Decision>,
}

/// `/ui/repo?name=`: a repository's tags.
pub fn repository(viewer: &Viewer, view: &RepoView, page: &Page<TagRow>) -> Markup {
    let (host, name) = (view.host, view.name);
    let body = html! {
        p.crumbs { a href="/ui/" { "Repositories" } " / " }
        h1 { (name) }
        @if let Some(n) = view.notice { p #notice.notice role="status" { (n) } }
        @if let Some(d) = &view.signature {
            p #signature class=(format!("signature {}", d.outcome)) {
                "Signature policy: " strong { (d.outcome) } " " code title=(d.digest) { (short_digest(&d.digest)) }
                " — " (d.reason) " (" (crate::ui::format::ago(d.at, std::time::SystemTime::now())) ")"
            }
        }
        (pull_commands(host, name, ""))
        @if page.items.is_empty() {
            p.empty { "No tags." }
        } @else {
            table #tags {
                thead { tr { th { "Tag" } th { "Digest" } th { "Platforms" } th.num { "Size" } th { "Created" } } }
                tbody {
                    @for t in &page.items {
                        tr.tag {
                            td.name { a href=(format!("/ui/tag?name={}&tag={}", q(name), q(&t.tag))) { (t.tag) } }
                            td.digest { code title=(t.digest.to_string()) { (short_digest(&t.digest.to_string())) } }
                            td.platforms { @if t.platforms.is_empty() { span.none { "single" } } @else { (t.platforms.join(", ")) } }
                            td.num.size data-bytes=(t.bytes) { (bytes(t.bytes)) }
                            td.created { @match &t.created { Some(c) => (c), None => span.none { "—" } } }
                        }
                    }
                }
            }
        }
        (pagination(|p| format!("/ui/repo?name={}&page={p}", q(name)), page.page, page.pages, page.total, "tags"))
    };
    layout(name, viewer, body)
}

/// `/ui/tag?name=&tag=`: one tag's manifest, platforms, layers and referrers.
pub fn tag(viewer: &Viewer, host: &str, name: &str, t: &TagDetails, can_delete: bool) -> Markup {
    let row = &t.row;
    let body = html! {
        p.crumbs { a href="/ui/" { "Repositories" } " / " a href=(format!("/ui/repo?name={}", q(name))) { (name) } " / " }
        h1 { (name) ":" (row.tag) }
        @if can_delete {
            p.actions { a #delete href=(format!("/ui/delete?name={}&tag={}", q(name), q(&row.tag))) { "Delete this tag…" } }
        }
        (pull_commands(host, name, &format!(":{}", row.tag)))
        dl.facts {
            dt { "Digest" } dd { code #digest { (row.digest) } }
            dt { "Media type" } dd { (row.media_type) }
            dt { "Compressed size" } dd #size data-bytes=(row.bytes) { (bytes(row.bytes)) }
            @if let Some(c) = &row.created { dt { "Created" } dd #created { (c) } }
        }
        @for image in &t.images {
            section.image {
                h2 { @match &image.platform { Some(p) => (p), None => "Image" } }
                p.meta {
                    "Manifest " code { (short_digest(&image.digest.to_string())) }
                    @if let Some(c) = &image.created { " · created " (c) }
                    @if let Some(c) = &image.config { " · config " code { (short_digest(&c.digest.to_string())) } }
                }
                table.layers {
                    thead { tr { th.num { "#" } th { "Layer" } th { "Media type" } th.num { "Size" } } }
                    tbody {
                        @for (i, l) in image.layers.iter().enumerate() {
                            tr.layer {
                                td.num { (i + 1) }
                                td { code title=(l.digest.to_string()) { (short_digest(&l.digest.to_string())) } }
                                td.media { (l.media_type) }
                                td.num.size data-bytes=(l.size) { (bytes(l.size)) }
                            }
                        }
                    }
                    tfoot { tr { td {} td { "Total" } td {} td.num { (bytes(image.layers.iter().map(|l| l.size).sum())) } } }
                }
            }
        }
        section #referrers {
            h2 { "Referrers" }
            @if t.referrers.is_empty() {
                p.empty { "No signatures, SBOMs or other artifacts refer to this manifest." }
            } @else {
                table {
                    thead { tr { th { "Artifact type" } th { "Digest" } th.num { "Size" } } }
                    tbody {
                        @for r in &t.referrers {
                            tr.referrer {
                                td { (r.artifact_type.as_deref().unwrap_or(&r.media_type)) }
                                td { code title=(r.digest) { (short_digest(&r.digest)) } }
                                td.num { (bytes(r.size)) }
                            }
                        }
                    }
                }
            }
        }
    };
    layout(&format!("{name}:{}", row.tag), viewer, body)
}

/// `/ui/delete?name=&tag=`: are you sure? The form carries `token` (see `session`).
pub fn confirm_delete(viewer: &Viewer, name: &str, tag: &str, digest: &str, token: &str) -> Markup {
    let back = format!("/ui/tag?name={}&tag={}", q(name), q(tag));
    let body = html! {
        h1 { "Delete " (name) ":" (tag) "?" }
        p {
            "The tag goes; the manifest it points to (" code { (short_digest(digest)) } ") stays, reachable by its digest \
             and by other tags, until garbage collection removes what nothing reaches any more."
        }
        form #confirm method="post" action="/ui/delete" {
            input type="hidden" name="name" value=(name);
            input type="hidden" name="tag" value=(tag);
            input type="hidden" name="token" value=(token);
            button.danger type="submit" { "Delete the tag" }
            " "
            a href=(back) { "Cancel" }
        }
    };
    layout(&format!("Delete {name}:{tag}"), viewer, body)
}

/// A page for what cannot be shown (unknown, or not for this viewer).
pub fn problem(viewer: &Viewer, title: &str, message: &str) -> Markup {
    layout(
        title,
        viewer,
        html! { h1 { (title) } p.problem { (message) } p { a href="/ui/" { "Back to the repositories" } } },
    )
}

/// A bar chart of traffic: for each bucket, what clients were served from
/// the mirror beside what was fetched from the upstreams (stacked by
/// upstream). Every bar carries its exact bytes (`data-bytes`).
fn traffic_chart(id: &str, title: &str, buckets: &[Bucket], hosts: &[String], label: impl Fn(u64) -> String) -> Markup {
    const W: f64 = 760.0;
    const H: f64 = 180.0;
    const LEFT: f64 = 70.0;
    const BOTTOM: f64 = 22.0;
    let plot_h = H - BOTTOM - 8.0;
    let max =
        buckets.iter().map(|b| b.totals.served_mirrored.max(b.totals.fetched_total())).max().unwrap_or(0).max(1) as f64;
    let slot = (W - LEFT) / buckets.len().max(1) as f64;
    let bar = (slot * 0.38).max(1.0);
    let y = |v: u64| 8.0 + plot_h - v as f64 / max * plot_h;
    let every = buckets.len().div_ceil(8).max(1);
    html! {
        figure.chart {
            figcaption { (title) }
            svg #(id) viewBox=(format!("0 0 {W} {H}")) role="img" aria-label=(title) {
                line.axis x1=(LEFT) y1=(8.0 + plot_h) x2=(W) y2=(8.0 + plot_h) {}
                text.tick x=(LEFT - 6.0) y=(14.0) text-anchor="end" { (bytes(max as u64)) }
                text.tick x=(LEFT - 6.0) y=(8.0 + plot_h) text-anchor="end" { "0" }
                @for (i, b) in buckets.iter().enumerate() {
                    @let x = LEFT + i as f64 * slot + slot * 0.1;
                    @let served = b.totals.served_mirrored;
                    rect.served x=(x) y=(y(served)) width=(bar) height=(8.0 + plot_h - y(served)) data-bytes=(served) {
                        title { (label(b.start)) ": " (bytes(served)) " served from the mirror" }
                    }
                    @for (host, n, below) in stacked(&b.totals, hosts) {
                        rect.fetched x=(x + bar) y=(y(below + n)) width=(bar) height=(y(below) - y(below + n)) data-upstream=(host) data-bytes=(n) {
                            title { (label(b.start)) ": " (bytes(n)) " fetched from " (host) }
                        }
                    }
                    @if i % every == 0 {
                        text.tick x=(x + bar) y=(H - 6.0) text-anchor="middle" { (label(b.start)) }
                    }
                }
            }
            p.legend { span.key.served {} " served from the mirror " span.key.fetched {} " fetched from upstreams" }
        }
    }
}

/// Each upstream's bytes in `t`, with the bytes of the upstreams stacked below it.
fn stacked<'a>(t: &crate::traffic::Totals, hosts: &'a [String]) -> Vec<(&'a String, u64, u64)> {
    let mut below = 0;
    hosts
        .iter()
        .map(|h| {
            let n = t.fetched.get(h).copied().unwrap_or(0);
            below += n;
            (h, n, below - n)
        })
        .collect()
}

fn hour_label(start: u64) -> String {
    format!("{:02}:00", start % 86_400 / 3600)
}

fn day_label(start: u64) -> String {
    utc(SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(start))[5..10].to_string()
}

/// `/ui/mirror`: the mirror at a glance.
/// Quotas and retention's dry run.
pub fn housekeeping(
    viewer: &Viewer,
    usage: &[crate::registry::quota::Usage],
    plan: &crate::registry::retention::RetentionReport,
) -> Markup {
    let body = html! {
        h1 { "Housekeeping" }
        h2 { "Quotas" }
        @if usage.is_empty() {
            p.empty { "No quotas ([[quota]] in the configuration)." }
        } @else {
            table #quotas {
                thead { tr { th { "Quota" } th { "Repositories" } th.num { "Used" } th.num { "Limit" } } }
                tbody {
                    @for u in usage {
                        tr.quota { td { (u.quota) } td { (u.repositories.join(", ")) }
                            td.num.used data-bytes=(u.used) { (bytes(u.used)) } td.num.limit data-bytes=(u.max) { (bytes(u.max)) } }
                    }
                }
            }
        }
        h2 { "Retention" }
        p.meta { "What `berth retention` would remove now (a dry run; nothing is removed from this page)." }
        @if plan.removals.is_empty() {
            p.empty #retention-none { "Nothing." }
        } @else {
            table #retention {
                thead { tr { th { "Repository" } th { "Tag" } th { "Digest" } th { "Rule" } th { "Why" } } }
                tbody {
                    @for r in &plan.removals {
                        tr.removal { td { (r.repository) } td.tag { @match &r.tag { Some(t) => (t), None => span.none { "untagged" } } }
                            td.digest { (r.digest) } td { (r.rule) } td { (r.why) } }
                    }
                }
            }
        }
    };
    layout("Housekeeping", viewer, body)
}

pub fn mirror(viewer: &Viewer, m: &MirrorOverview) -> Markup {
    let now = SystemTime::now();
    let t = &m.totals;
    let hosts: Vec<String> = m.upstreams.iter().map(|u| u.host.clone()).collect();
    let body = html! {
        h1 { "The mirror" }
        @if !m.enabled {
            p.empty { "Mirroring is off (mirror.enabled = false)." }
        }
        p.meta { "Since the server started; what /metrics reports." }
        dl.facts #totals {
            dt { "Hit ratio" }
            dd #hit-ratio { @match t.hit_ratio() { Some(r) => (format!("{:.1}%", r * 100.0)), None => span.none { "—" } }
                " " span.meta { "(" (t.lookups_cached) " of " (t.lookups_cached + t.lookups_fetched) " lookups without a download)" } }
            dt { "Served from the mirror" } dd #served data-bytes=(t.served_mirrored) { (bytes(t.served_mirrored)) }
            dt { "Fetched from upstreams" } dd #fetched data-bytes=(t.fetched_total()) { (bytes(t.fetched_total())) }
            dt { "Bandwidth saved" } dd #saved data-bytes=(t.saved()) { (bytes(t.saved())) }
            dt { "Served from pushed content" } dd #served-pushed data-bytes=(t.served_pushed) { (bytes(t.served_pushed)) }
        }
        (traffic_chart("last-day", "The last 24 hours, by the hour (UTC)", &m.hourly, &hosts, hour_label))
        (traffic_chart("last-month", "The last 30 days, by the day", &m.daily, &hosts, day_label))
        h2 { "Upstreams" }
        table #upstreams {
            thead { tr { th { "Upstream" } th.num { "Fetched" } th { "Last answered" } th { "Last error" } th { "Errors" } } }
            tbody {
                @for u in &m.upstreams {
                    tr.upstream {
                        td.host { (u.host) }
                        td.num.fetched data-bytes=(u.fetched) { (bytes(u.fetched)) }
                        td { (when(u.last_ok, now)) }
                        td.error { @match &u.last_error { Some((at, msg)) => { (when(Some(*at), now)) ": " (msg) }, None => span.none { "none" } } }
                        td.errors { @if u.errors.is_empty() { span.none { "0" } } @else {
                            (u.errors.iter().map(|(k, n)| format!("{k}: {n}")).collect::<Vec<_>>().join(", ")) } }
                    }
                }
            }
        }
        h2 { "Storage" }
        dl.facts #storage {
            dt { "Mirrored content" }
            dd #mirror-bytes data-bytes=(m.mirror_bytes) {
                (bytes(m.mirror_bytes))
                @if let Some(max) = m.max_size {
                    " of " (bytes(max)) " (mirror.max_size) "
                    meter min="0" max=(max) value=(m.mirror_bytes.min(max)) { (m.mirror_bytes) }
                } @else { " " span.none { "(no mirror.max_size)" } }
            }
            dt { "Pushed content" } dd data-bytes=(m.other_bytes) { (bytes(m.other_bytes)) }
        }
        h2 { "Eviction and garbage collection" }
        dl.facts #runs {
            dt { "Last eviction pass" }
            dd #last-eviction { @match &m.last_runs.eviction {
                Some((at, r)) => { (when(Some(*at), now)) ": " (r.tags) " tags, " (r.manifests) " manifests, "
                    (r.blob_links) " blob links and " (r.blobs) " blobs removed, " (bytes(r.bytes_freed)) " freed" }
                None => span.none { "none since the start" },
            } }
            dt { "Freed by eviction since the start" } dd #evicted data-bytes=(m.evicted_bytes) { (bytes(m.evicted_bytes)) }
            dt { "Last garbage collection" }
            dd #last-gc { @match &m.last_runs.gc {
                Some((at, r)) => { (when(Some(*at), now)) ": " (r.manifests_removed) " manifests and " (r.blobs_removed)
                    " blobs removed, " (bytes(r.bytes_freed)) " freed" }
                None => span.none { "none since the start" },
            } }
            dt { "Freed by garbage collection since the start" } dd #collected data-bytes=(m.gc_bytes) { (bytes(m.gc_bytes)) }
        }
    };
    layout("The mirror", viewer, body)
}
