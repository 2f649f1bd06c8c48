//! Short, stable content hashes for annotations. SHA-256 rather than `std`'s hasher, whose output
//! may change between Rust releases and would roll every fleet on an operator upgrade.

use sha2::{Digest, Sha256};

/// The first 16 hex digits of the SHA-256 of `parts`, each length-prefixed so that
/// `["ab", "c"]` and `["a", "bc"]` differ.
pub fn short_hash<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> String {
    let mut hasher = Sha256::new();
    for part in parts {
        hasher.update((part.len() as u64).to_be_bytes());
        hasher.update(part);
    }
    let digest = hasher.finalize();
    hex::encode(&digest[..8])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_and_boundary_sensitive() {
        let a = short_hash([b"ab".as_slice(), b"c".as_slice()]);
        let b = short_hash([b"a".as_slice(), b"bc".as_slice()]);
        assert_ne!(a, b);
        assert_eq!(a.len(), 16);
        assert_eq!(a, short_hash([b"ab".as_slice(), b"c".as_slice()]));
    }
}
