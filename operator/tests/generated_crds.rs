//! The committed CRD YAML (top-level `crds/` and the chart's copy) must be exactly what the Rust
//! types generate. Regenerate with:
//! `cargo run -p edgefleet-operator -- crdgen --out crds && cp crds/*.yaml charts/edgefleet/crds/`

use std::path::Path;

fn check_dir(dir: &Path) {
    let files = edgefleet_operator::api::crd_files().expect("our own CRDs serialise");
    let mut expected: Vec<String> = files.iter().map(|(name, _)| name.clone()).collect();
    expected.sort();
    let mut present: Vec<String> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{} unreadable: {e}", dir.display()))
        .filter_map(|entry| entry.ok()?.file_name().into_string().ok())
        .filter(|name| name.ends_with(".yaml"))
        .collect();
    present.sort();
    assert_eq!(
        present,
        expected,
        "{} holds other CRD files than the types generate",
        dir.display()
    );
    for (name, yaml) in files {
        let committed = std::fs::read_to_string(dir.join(&name)).expect("listed above");
        assert!(
            committed == yaml,
            "{}/{name} is out of date with the Rust types; regenerate it (see this file's header)",
            dir.display()
        );
    }
}

#[test]
fn crds_dir_matches_the_types() {
    check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../crds"));
}

#[test]
fn chart_crds_match_the_types() {
    check_dir(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/edgefleet/crds"));
}
