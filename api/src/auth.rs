//! API keys and roles. Keys are configured as SHA-256 hashes; a presented key is hashed and
//! compared with every configured hash in constant time, so neither the key nor timing tells
//! which hash it came close to.

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::config::KeyConfig;

/// What a key may do; each role includes the ones before it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Read graphs, deployments, events, state, views, metrics.
    Viewer,
    /// Also submit graphs and deploy, pause, resume, stop, roll back.
    Operator,
    /// Everything.
    Admin,
}

impl Role {
    /// Its name in configuration and errors.
    pub fn name(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
            Role::Admin => "admin",
        }
    }
}

/// A key that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The key's name, the actor on events.
    pub name: String,
    /// Its role.
    pub role: Role,
}

/// SHA-256 of text, as hex.
pub fn sha256_hex(text: &str) -> String {
    format!("{:x}", Sha256::digest(text.as_bytes()))
}

/// What `[[api.keys]] sha256` holds for a key.
pub fn hash_key(key: &str) -> String {
    sha256_hex(key)
}

/// The configured keys, hashes decoded.
#[derive(Debug, Clone, Default)]
pub struct Keys {
    keys: Vec<(Caller, [u8; 32])>,
}

impl Keys {
    /// From configuration (hashes already checked to be 64 hex digits).
    pub fn new(config: &[KeyConfig]) -> Keys {
        let keys = config
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = k
                        .sha256
                        .get(2 * i..2 * i + 2)
                        .and_then(|h| u8::from_str_radix(h, 16).ok())
                        .unwrap_or(0);
                }
                let caller = Caller {
                    name: k.name.clone(),
                    role: k.role,
                };
                (caller, hash)
            })
            .collect();
        Keys { keys }
    }

    /// The caller a presented key belongs to. Every configured hash is compared.
    pub fn check(&self, presented: &str) -> Option<Caller> {
        let digest = Sha256::digest(presented.as_bytes());
        let mut found = None;
        for (caller, hash) in &self.keys {
            if bool::from(digest.as_slice().ct_eq(hash)) {
                found = Some(caller.clone());
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_only_the_configured_key() {
        let keys = Keys::new(&[KeyConfig {
            name: "alice".into(),
            role: Role::Operator,
            sha256: hash_key("s3cret"),
        }]);
        assert_eq!(keys.check("s3cret").map(|c| c.name), Some("alice".into()));
        assert_eq!(keys.check("s3cret "), None);
        assert_eq!(keys.check(""), None);
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
    }
}
