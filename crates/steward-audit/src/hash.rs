//! SHA-256 hashes and the RFC 9162 leaf and node hash functions.
//!
//! RFC 9162 §2.1.1 separates leaves from interior nodes with a one-byte
//! prefix (0x00 for leaves, 0x01 for nodes), so no interior node can be
//! passed off as a leaf (second-preimage resistance of the tree).

use std::fmt;
use std::str::FromStr;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

/// A SHA-256 digest: a leaf hash, an interior node hash or a tree root.
///
/// It prints and serialises as 64 lowercase hex characters; checkpoints
/// carry it as base64 (see [`Hash::to_base64`]).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Hash(pub [u8; 32]);

/// Why a string could not be read as a [`Hash`](struct@Hash)(struct@Hash).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HashParseError {
    /// The text (hex or base64) did not decode to exactly 32 bytes.
    #[error("a SHA-256 hash is 32 bytes, this one is {0}")]
    WrongLength(usize),
    /// A character outside `0-9a-fA-F` in hex text.
    #[error("not hexadecimal: {0:?}")]
    InvalidHex(char),
    /// The text is not standard (padded) base64.
    #[error("not base64: {0}")]
    InvalidBase64(String),
}

impl Hash {
    /// The 32 raw bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// Lowercase hex, 64 characters.
    pub fn to_hex(&self) -> String {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        let mut out = String::with_capacity(64);
        for byte in self.0 {
            out.push(char::from(DIGITS[usize::from(byte >> 4)]));
            out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
        }
        out
    }

    /// Parses 64 hex characters (either case).
    pub fn from_hex(text: &str) -> Result<Self, HashParseError> {
        let bytes = text.as_bytes();
        if bytes.len() != 64 {
            // Report the byte count the text would have had, the unit the
            // error message speaks of.
            return Err(HashParseError::WrongLength(bytes.len() / 2));
        }
        let mut out = [0u8; 32];
        for (slot, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
            let high = hex_value(pair[0])?;
            let low = hex_value(pair[1])?;
            *slot = (high << 4) | low;
        }
        Ok(Self(out))
    }

    /// Standard base64 with padding (44 characters), as in signed notes.
    pub fn to_base64(&self) -> String {
        BASE64.encode(self.0)
    }

    /// Parses standard padded base64 of exactly 32 bytes.
    pub fn from_base64(text: &str) -> Result<Self, HashParseError> {
        let bytes = BASE64
            .decode(text)
            .map_err(|e| HashParseError::InvalidBase64(e.to_string()))?;
        let array: [u8; 32] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| HashParseError::WrongLength(bytes.len()))?;
        Ok(Self(array))
    }
}

fn hex_value(digit: u8) -> Result<u8, HashParseError> {
    match digit {
        b'0'..=b'9' => Ok(digit - b'0'),
        b'a'..=b'f' => Ok(digit - b'a' + 10),
        b'A'..=b'F' => Ok(digit - b'A' + 10),
        other => Err(HashParseError::InvalidHex(char::from(other))),
    }
}

impl From<[u8; 32]> for Hash {
    fn from(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }
}

impl AsRef<[u8]> for Hash {
    fn as_ref(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Display for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Hash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Hash({})", self.to_hex())
    }
}

impl FromStr for Hash {
    type Err = HashParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        Self::from_hex(text)
    }
}

impl Serialize for Hash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for Hash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = <std::borrow::Cow<'de, str>>::deserialize(deserializer)?;
        Self::from_hex(&text).map_err(serde::de::Error::custom)
    }
}

/// The hash of a log entry: SHA-256(0x00 || data) (RFC 9162 §2.1.1).
pub fn leaf_hash(data: &[u8]) -> Hash {
    let mut hasher = Sha256::new();
    hasher.update([0x00]);
    hasher.update(data);
    Hash(hasher.finalize().into())
}

/// The hash of an interior node: SHA-256(0x01 || left || right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut block = [0u8; 65];
    block[0] = 0x01;
    block[1..33].copy_from_slice(&left.0);
    block[33..].copy_from_slice(&right.0);
    Hash(Sha256::digest(block).into())
}

/// The root of the empty tree: SHA-256 of the empty string (RFC 9162 §2.1.1).
pub fn empty_root() -> Hash {
    Hash(Sha256::digest([]).into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_root_is_sha256_of_nothing() {
        assert_eq!(
            empty_root().to_hex(),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    #[test]
    fn leaf_of_empty_data_is_the_reference_one_leaf_root() {
        // RFC 6962 reference: the tree holding the single empty leaf.
        assert_eq!(
            leaf_hash(b"").to_hex(),
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
        );
    }

    #[test]
    fn node_hash_of_the_first_two_reference_leaves() {
        let root = node_hash(&leaf_hash(b""), &leaf_hash(&[0x00]));
        assert_eq!(
            root.to_hex(),
            "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
        );
    }

    #[test]
    fn hex_and_base64_round_trip() {
        let hash = leaf_hash(b"round trip");
        assert_eq!(Hash::from_hex(&hash.to_hex()), Ok(hash));
        assert_eq!(Hash::from_hex(&hash.to_hex().to_uppercase()), Ok(hash));
        assert_eq!(Hash::from_base64(&hash.to_base64()), Ok(hash));
        assert_eq!(hash.to_hex().parse::<Hash>(), Ok(hash));
        assert_eq!(hash.to_string(), hash.to_hex());
    }

    #[test]
    fn bad_text_is_rejected_with_a_reason() {
        assert_eq!(Hash::from_hex("abcd"), Err(HashParseError::WrongLength(2)));
        let not_hex = "g".repeat(64);
        assert_eq!(
            Hash::from_hex(&not_hex),
            Err(HashParseError::InvalidHex('g'))
        );
        assert_eq!(
            Hash::from_base64("AAAA"),
            Err(HashParseError::WrongLength(3))
        );
        assert!(matches!(
            Hash::from_base64("not base64!"),
            Err(HashParseError::InvalidBase64(_))
        ));
    }

    #[test]
    fn serde_uses_hex() {
        let hash = leaf_hash(b"serde");
        let json = serde_json::to_string(&hash).unwrap();
        assert_eq!(json, format!("\"{}\"", hash.to_hex()));
        assert_eq!(serde_json::from_str::<Hash>(&json).unwrap(), hash);
        assert!(serde_json::from_str::<Hash>("\"00\"").is_err());
    }
}
