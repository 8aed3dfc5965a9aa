//! Releases as desired state: the local image repository (lir) and its replicas.
//!
//! A release is a squashfs holding files and container images, described by its manifest
//! (`release.toml`, see [`manifest`]). Making a release *present* downloads it (HTTP(S) with
//! Range resume), verifies its digest and detached signature, unpacks it safely, checks its
//! layout, syncs its files to the file stores (a directory or `rsync://`), pushes its images
//! to the primary OCI registry and replicates to the replicas; *absent* deletes its tags,
//! manifests and files and runs the registries' garbage collection. Registries are spoken to
//! directly (distribution API v2, [`registry`]) with Basic or bearer-token auth ([`auth`]);
//! multi-platform image indexes are pushed whole. Kubernetes scaling of
//! the lir-data deployment and discovery of its replica pods are in [`k8s`].
//!
//! Role: the I/O of releases, used by the `release` and `k8s_replicas` object classes of
//! tenet-modules and by the agent's `tenet release` commands.
//!
//! Must not depend on: tenet-modules, tenet-agent, tenet-collector (it is below them).
//!
//! Invariants:
//! - Nothing unpacked leaves the work dir (no absolute paths, `..`, escaping symlinks or
//!   device nodes are written).
//! - Nothing is pushed or synced before the digest and the signature have verified.
//! - Every step is idempotent: a re-run after a failure resumes (a verified download is not
//!   fetched again, blobs already in a registry are not pushed again).
//! - TLS verification is never switched off: plain HTTP only where a URL says `http://`.
//! - Passwords and registry tokens never appear in errors, logs, progress or statuses.
//! - A release recorded as wanted whose check is clean is not touched again unless forced.

pub mod auth;
pub mod converge;
pub mod deployment;
pub mod download;
pub mod error;
pub mod filestore;
pub mod image;
#[cfg(feature = "k8s")]
pub mod k8s;
/// Built without the `k8s` feature: the same API, each call an error saying so.
#[cfg(not(feature = "k8s"))]
pub mod k8s {
    pub use crate::k8s_absent::*;
}
#[cfg(not(feature = "k8s"))]
mod k8s_absent;
#[cfg(all(feature = "k8s", any(test, feature = "fake-kube")))]
pub mod k8s_fake;
pub mod manifest;
pub mod progress;
pub mod registry;
pub mod rule;
pub mod signature;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod unsquash;

pub use error::{Error, Result};
pub use progress::{NoProgress, Progress, Step};
