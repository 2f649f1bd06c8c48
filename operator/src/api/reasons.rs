//! The reasons a Distribution's conditions give: part of its API, since people read them in
//! `kubectl get dist` (the REASON column is the Ready condition's reason) and tools and tests
//! match on them. Each says what a person can act on; the condition's message says how.

/// Ready: every region runs as many ready edges of the current spec as it asks for.
pub const ALL_REGIONS_READY: &str = "AllRegionsReady";
/// Ready, Progressing: a region's edges are being created or replaced, and nothing is wrong.
pub const ROLLOUT_IN_PROGRESS: &str = "RolloutInProgress";
/// Progressing: every region runs the current edges.
pub const ROLLOUT_COMPLETE: &str = "RolloutComplete";
/// Degraded (False): nothing stands in the way.
pub const AS_EXPECTED: &str = "AsExpected";
/// Ready: `spec.enabled` is false, every region is scaled to zero.
pub const DISABLED: &str = "Disabled";

/// Degraded, Ready: no node carries a region's label (or, with `zones`, one of its zones).
pub const NO_NODES_IN_REGION: &str = "NoNodesInRegion";
/// Degraded, Ready: an edge pod's image cannot be pulled (kubelet: `ErrImagePull`,
/// `ImagePullBackOff`, `InvalidImageName`, `ErrImageNeverPull`, `RegistryUnavailable`,
/// `SignatureValidationFailed`, `ImageInspectError`).
pub const EDGE_IMAGE_PULL_FAILED: &str = "EdgeImagePullFailed";
/// Degraded, Ready: an edge container cannot be created or started (kubelet:
/// `CreateContainerConfigError`, `CreateContainerError`, `RunContainerError`, or
/// `CrashLoopBackOff` after a start that failed, last state `StartError`/`ContainerCannotRun`).
pub const EDGE_CANNOT_START: &str = "EdgeCannotStart";
/// Degraded, Ready: an edge container starts, exits and is restarted again and again (kubelet:
/// `CrashLoopBackOff` after the process ran).
pub const EDGE_CRASH_LOOPING: &str = "EdgeCrashLooping";
/// Degraded, Ready: the scheduler finds no node for an edge pod (`PodScheduled=False`, reason
/// `Unschedulable`), although the region has nodes.
pub const EDGE_UNSCHEDULABLE: &str = "EdgeUnschedulable";

/// Every condition: an origin's credentials Secret (or a key in it) is missing.
pub const ORIGIN_SECRET_MISSING: &str = "OriginSecretMissing";
/// Every condition: a behavior or origin group names an origin that does not exist.
pub const UNKNOWN_ORIGIN: &str = "UnknownOrigin";
/// Every condition: the upload client keys Secret is missing or unusable.
pub const UPLOAD_KEYS_SECRET_MISSING: &str = "UploadKeysSecretMissing";
/// Every condition: a setting the edge cannot use.
pub const INVALID_SPEC: &str = "InvalidSpec";
/// Every condition: an object the Distribution needs exists and belongs to someone else.
pub const NAME_CONFLICT: &str = "NameConflict";
