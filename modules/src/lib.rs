//! # tenet-modules: the module engine and the object classes
//!
//! Role: run modules (check / fixable / fix / auto) against a host. A module is either a
//! script (`NN-name` executable, OpenSVC contract) or an auto-module whose ruleset's variables
//! are each handled by a built-in object class ([`classes`]). Every class acts only through a
//! [`host::Host`], whose root prefix maps every path it touches, so tests run the real code on
//! a temporary root.
//!
//! Must not depend on: tenet-agent, tenet-collector, any HTTP server or SQL crate. It never
//! speaks to the collector; it receives a resolved [`tenet_rulesets::Policy`].
//!
//! Invariants:
//! - `check` has no side effects: classes check through a read-only [`host::HostView`].
//! - Nothing a class reads or writes lies outside the root prefix: paths are
//!   [`rooted::RootedPath`]s resolved inside it at each use (symbolic links as if the root
//!   prefix were `/`), and classes reach files only through the host's helpers.
//! - `fix` writes files atomically (temporary file + fsync + rename) and backs up what it
//!   replaces; fixing a compliant rule changes nothing.
//! - One module's failure (crash, timeout, bad rule, unknown class) never stops the run.

mod accounts;
pub mod class;
pub mod classes;
pub mod engine;
pub mod error;
pub mod host;
pub mod object;
pub mod packages;
pub mod rooted;
pub mod script;
pub mod status;
#[cfg(any(test, feature = "testing"))]
pub mod testing;

pub use error::{Error, Result};
pub use host::{Host, HostView, RootedPath};
pub use status::{Log, Status};
