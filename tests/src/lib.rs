//! The local test infrastructure shared by the end-to-end tests: a real Kubernetes control plane
//! with simulated nodes ([`cluster`]), a real S3-compatible store ([`s3`]), and the small
//! utilities they need ([`wait`], [`process`], [`tools`]).

pub mod answer;
pub mod binaries;
pub mod boto3;
pub mod cluster;
pub mod error;
pub mod images;
pub mod operator;
pub mod pods;
pub mod process;
pub mod resources;
pub mod s3;
pub mod setup;
pub mod tools;
pub mod traffic;
pub mod wait;

pub use cluster::Cluster;
pub use error::{Error, Result};
pub use s3::S3Server;
pub use wait::wait_for;
