//! Golden files of what the operator renders. A change to rendering shows up as a diff of these
//! files in review. `UPDATE_GOLDEN=1 cargo test -p edgefleet-operator --test render_golden`
//! rewrites them.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use edgefleet_operator::api::Distribution;
use edgefleet_operator::render::{self, Credentials, Inputs, S3Credentials, Settings, UploadKeys};

fn path(relative: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(relative)
}

fn settings() -> Settings {
    Settings {
        region_label: "topology.kubernetes.io/region".into(),
        zone_label: "topology.kubernetes.io/zone".into(),
        edge_image: "ghcr.io/edgefleet/edge:0.1.0".into(),
        edge_image_pull_policy: None,
        edge_image_pull_secrets: Vec::new(),
        ingress: render::Ingresses::Disabled,
    }
}

fn inputs(dist: &Distribution) -> Inputs {
    let origins = dist
        .spec
        .origins
        .iter()
        .filter(|o| {
            o.s3.as_ref()
                .is_some_and(|s3| s3.credentials_secret_ref.is_some())
        })
        .map(|o| {
            let pair = S3Credentials {
                access_key_id: b"golden-access-key-id".to_vec(),
                secret_access_key: b"golden-secret-access-key".to_vec(),
            };
            (o.name.clone(), pair)
        })
        .collect::<BTreeMap<_, _>>();
    let upload_keys = dist
        .spec
        .upload_acceleration
        .as_ref()
        .filter(|u| u.enabled)
        .map(|_| {
            UploadKeys(BTreeMap::from([(
                "golden-uploader".to_owned(),
                "golden-upload-secret".to_owned(),
            )]))
        });
    Inputs {
        admin_token: "golden-admin-token".into(),
        credentials: Credentials { origins, upload_keys },
    }
}

fn rendered(input: &str, namespace: &str) -> String {
    let text = std::fs::read_to_string(path(input)).expect("input readable");
    let mut dist: Distribution = serde_yaml::from_str(&text).expect("input is a Distribution");
    dist.metadata
        .namespace
        .get_or_insert_with(|| namespace.to_owned());
    dist.metadata
        .uid
        .get_or_insert_with(|| "0b9f7a4e-0000-4000-8000-000000000001".to_owned());
    let fleet = render::render(&dist, &settings(), &inputs(&dist)).expect("renders");
    let mut out = String::new();
    for manifest in fleet.manifests().expect("serialises") {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&manifest.body).expect("yaml"));
    }
    out
}

fn check(golden: &str, actual: &str) {
    let golden = path(golden);
    if std::env::var_os("UPDATE_GOLDEN").is_some() {
        std::fs::write(&golden, actual).expect("golden written");
        return;
    }
    let expected = std::fs::read_to_string(&golden).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (run with UPDATE_GOLDEN=1 to create it)",
            golden.display()
        )
    });
    if expected != actual {
        let first = expected
            .lines()
            .zip(actual.lines())
            .position(|(e, a)| e != a)
            .unwrap_or(expected.lines().count().min(actual.lines().count()));
        panic!(
            "{} differs from what is rendered, first at line {}:\n  golden:   {:?}\n  rendered: {:?}\n\
             Review the change, then run with UPDATE_GOLDEN=1 to accept it.",
            golden.display(),
            first + 1,
            expected.lines().nth(first),
            actual.lines().nth(first)
        );
    }
}

#[test]
fn the_example_distribution() {
    check(
        "tests/golden/site.yaml",
        &rendered("../examples/distribution.yaml", "web"),
    );
}

#[test]
fn a_disabled_http_distribution_with_zones_disk_and_own_resources() {
    check(
        "tests/golden/http-disabled.yaml",
        &rendered("tests/golden/http-disabled.input.yaml", "team-a"),
    );
}

#[test]
fn upload_acceleration() {
    check(
        "tests/golden/upload.yaml",
        &rendered("tests/golden/upload.input.yaml", "media"),
    );
}
