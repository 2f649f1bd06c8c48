//! The edge's runtime configuration.
//!
//! One definition shared by the operator (which renders it into a ConfigMap) and the edge (which
//! loads it from a file or a watched ConfigMap).
#![forbid(unsafe_code)]
#![deny(missing_docs)]
