//! Secrets that clients present (stats API keys, write keys), looked up in constant time.
//!
//! A `HashMap<String, _>` lookup leaks, through its timing, how much of a guess matches a
//! stored key. Here every presented token is hashed (SHA-256, so every comparison has the
//! same length) and compared with every stored digest without stopping at a match: the time
//! taken depends on the number of keys only.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Which configured key matched: its position in the configuration. Safe to log and to use
/// as a map key (it is not the secret).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub u32);

impl std::fmt::Display for KeyId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "key#{}", self.0)
    }
}

/// Configured secrets and what each one grants.
pub struct Secrets<T> {
    digests: Vec<[u8; 32]>,
    grants: Vec<T>,
}

impl<T> Secrets<T> {
    pub fn new(entries: impl IntoIterator<Item = (String, T)>) -> Self {
        let (digests, grants) = entries
            .into_iter()
            .map(|(secret, grant)| (digest(&secret), grant))
            .unzip();
        Self { digests, grants }
    }

    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    pub fn len(&self) -> usize {
        self.grants.len()
    }

    /// The key `presented` matches and what it grants. Compares with every key.
    pub fn find(&self, presented: &str) -> Option<(KeyId, &T)> {
        let presented = digest(presented);
        let mut found = subtle::Choice::from(0);
        let mut index = 0u32;
        for (n, stored) in self.digests.iter().enumerate() {
            let hit = stored.ct_eq(&presented);
            // Positions fit in u32: keys come from configuration.
            let n = u32::try_from(n).unwrap_or(u32::MAX);
            index.conditional_assign(&n, hit);
            found |= hit;
        }
        let found: bool = found.into();
        found.then(|| (KeyId(index), &self.grants[index as usize]))
    }
}

impl<T> Secrets<T> {
    /// A name for the key that cannot be turned back into it: the first 6 bytes of its
    /// SHA-256, in hex (`key:` + 12 characters), for audit lines and logs.
    pub fn fingerprint(&self, key: KeyId) -> Option<String> {
        let digest = self.digests.get(key.0 as usize)?;
        Some(format!(
            "key:{}",
            digest[..6]
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect::<String>()
        ))
    }
}

fn digest(secret: &str) -> [u8; 32] {
    Sha256::digest(secret.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_the_matching_key_and_nothing_else() {
        let secrets = Secrets::new([
            ("first-secret".to_owned(), "a"),
            ("second-secret".to_owned(), "b"),
        ]);
        assert_eq!(secrets.find("second-secret"), Some((KeyId(1), &"b")));
        assert_eq!(secrets.find("first-secret"), Some((KeyId(0), &"a")));
        assert_eq!(secrets.find("first-secre"), None);
        assert_eq!(secrets.find("first-secrett"), None);
        assert_eq!(secrets.find(""), None);
        // echo -n first-secret | sha256sum | cut -c1-12
        assert_eq!(
            secrets.fingerprint(KeyId(0)).as_deref(),
            Some("key:e0a5091e7f56")
        );
        assert_eq!(secrets.fingerprint(KeyId(2)), None);
        assert!(Secrets::<()>::new([]).find("x").is_none());
    }
}
