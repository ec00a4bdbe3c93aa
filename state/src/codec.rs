//! Versioned value encoding: one format-version byte, then bincode 1.3.
//!
//! ```
//! let bytes = tickflow_state::codec::encode(&(7u64, "AAPL".to_string())).unwrap();
//! let back: (u64, String) = tickflow_state::codec::decode(&bytes).unwrap();
//! assert_eq!(back, (7, "AAPL".to_string()));
//! ```

use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::StateError;

/// The format version written in front of every encoded value.
pub const FORMAT_VERSION: u8 = 1;

/// Encodes `value` behind the current format-version byte.
pub fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StateError> {
    let mut out = vec![FORMAT_VERSION];
    bincode::serialize_into(&mut out, value).map_err(|e| StateError::Corrupt(e.to_string()))?;
    Ok(out)
}

/// Decodes a value written by [`encode`], checking its format version.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, StateError> {
    let (&version, body) = bytes
        .split_first()
        .ok_or_else(|| StateError::Corrupt("empty value".into()))?;
    if version != FORMAT_VERSION {
        return Err(StateError::UnsupportedVersion {
            found: version,
            expected: FORMAT_VERSION,
        });
    }
    bincode::deserialize(body).map_err(|e| StateError::Corrupt(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_version_checks() {
        let bytes = encode(&vec![1u32, 2, 3]).unwrap();
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Vec<u32>>(&bytes).unwrap(), vec![1, 2, 3]);

        let mut wrong = bytes.clone();
        wrong[0] = 9;
        assert!(matches!(
            decode::<Vec<u32>>(&wrong),
            Err(StateError::UnsupportedVersion { found: 9, .. })
        ));
        assert!(matches!(
            decode::<Vec<u32>>(&[]),
            Err(StateError::Corrupt(_))
        ));
        assert!(matches!(
            decode::<Vec<u32>>(&bytes[..3]),
            Err(StateError::Corrupt(_))
        ));
    }
}
