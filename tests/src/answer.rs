//! What the tests and the demo read from an edge's answer.

/// The header `name` of `response` as text, `-` when it is missing or not text (how the demo
/// prints it, and a value no real `X-Cache` or `X-Edge-Location` takes).
pub fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_owned()
}
