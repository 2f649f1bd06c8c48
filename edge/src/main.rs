//! edgefleet-edge: the caching reverse proxy each region runs.
fn main() {}
