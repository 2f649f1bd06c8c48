//! edgefleet-operator.
fn main() {}
