//! The `edgefleet.io/v1alpha1` API: `Distribution` and `Invalidation`.
//!
//! Types only, no I/O. The CRD YAML in `crds/` is generated from these types (`crdgen`), and
//! admission-time validation lives here as schema constraints and CEL rules, so `kubectl apply`
//! refuses bad input with a message a person can act on.

// KubeSchema's derive copies each struct, `pub` included, into a private scope, which
// `unreachable_pub` flags; the types themselves are re-exported below.
#[allow(unreachable_pub)]
mod distribution;
#[allow(unreachable_pub)]
mod invalidation;
pub mod reasons;

pub use distribution::*;
pub use invalidation::*;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::CustomResourceExt;

/// API group of every edgefleet resource.
pub const GROUP: &str = "edgefleet.io";

/// Every CRD this operator serves, in the order `crdgen` writes them.
pub fn crds() -> Vec<CustomResourceDefinition> {
    vec![Distribution::crd(), Invalidation::crd()]
}

/// The generated CRD files: `(<plural>.<group>.yaml, YAML text)`. `crds/` and the chart's `crds/`
/// hold exactly these.
pub fn crd_files() -> Result<Vec<(String, String)>, serde_yaml::Error> {
    crds()
        .into_iter()
        .map(|crd| {
            let name = format!("{}.yaml", crd.metadata.name.as_deref().unwrap_or_default());
            Ok((name, serde_yaml::to_string(&crd)?))
        })
        .collect()
}
