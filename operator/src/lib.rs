//! edgefleet's operator: turns `Distribution` manifests into regional fleets of caching edges and
//! carries out `Invalidation`s.
//!
//! - [`api`]: the CRD types (no I/O);
//! - [`render`]: pure functions from a Distribution to the objects of its fleet;
//! - [`controller`]: the reconcile loops, the only code that talks to the Kubernetes API;
//! - [`telemetry`]: logging and Prometheus metrics;
//! - [`server`]: the health and metrics HTTP endpoint.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod api;
pub mod controller;
mod error;
pub mod render;
pub mod server;
pub mod telemetry;

pub use error::{Error, Result};
