//! How a person is named where they must not be: the SHA-256 of their distinct id, in hex.
//! The suppression list and the erasure audit hold only this; the worker computes it for
//! each person of a batch to drop a suppressed person's events, and the stats API to suppress and audit.

use sha2::{Digest, Sha256};

/// The lower-case hex SHA-256 of a distinct id (64 characters).
pub fn person_digest(distinct_id: &str) -> String {
    // The digest formats itself as lower-case hex: one string, not one per byte (the worker
    // computes this for every person of every batch).
    format!("{:x}", Sha256::digest(distinct_id.as_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_digest_is_the_standard_sha256_in_hex() {
        // echo -n "abc" | sha256sum
        assert_eq!(
            person_digest("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
