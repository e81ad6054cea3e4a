//! How a mutex's value becomes bytes and back ([`Codec`]): bytes as they are ([`Bytes`]),
//! JSON with the `serde` feature (`Json`), or the user's own format.

/// Turns a mutex's value into the bytes stored beside the lock, and back. Implement it for a
/// format of your own (a compact binary one, say); [`Bytes`] and, with the `serde` feature,
/// `Json` come with the crate.
///
/// ```
/// use rdlock_driver::Codec;
///
/// /// A counter stored as 8 little-endian bytes.
/// struct Le;
///
/// #[derive(Debug, thiserror::Error)]
/// #[error("expected 8 bytes, found {0}")]
/// struct BadLength(usize);
///
/// impl Codec<u64> for Le {
///     type Error = BadLength;
///     fn encode(&self, value: &u64) -> Result<Vec<u8>, BadLength> {
///         Ok(value.to_le_bytes().to_vec())
///     }
///     fn decode(&self, bytes: &[u8]) -> Result<u64, BadLength> {
///         Ok(u64::from_le_bytes(bytes.try_into().map_err(|_| BadLength(bytes.len()))?))
///     }
/// }
/// assert_eq!(Le.decode(&Le.encode(&7).unwrap()).unwrap(), 7);
/// ```
pub trait Codec<T> {
    /// Why a value could not be encoded or decoded; it reaches the caller inside
    /// [`Error::Encode`](crate::Error::Encode) or [`Error::Decode`](crate::Error::Decode).
    type Error: std::error::Error + Send + Sync + 'static;

    /// The bytes to store for `value`.
    ///
    /// # Errors
    ///
    /// When `value` cannot be represented; nothing is written then.
    fn encode(&self, value: &T) -> Result<Vec<u8>, Self::Error>;

    /// The value stored as `bytes`.
    ///
    /// # Errors
    ///
    /// When `bytes` are not a value of this format (written by another program, another
    /// version of the type, or by hand); the stored bytes are left as they are.
    fn decode(&self, bytes: &[u8]) -> Result<T, Self::Error>;
}

/// The value as raw bytes (`Vec<u8>`), stored as they are: always available.
#[derive(Clone, Copy, Debug, Default)]
pub struct Bytes;

impl Codec<Vec<u8>> for Bytes {
    type Error = std::convert::Infallible;

    fn encode(&self, value: &Vec<u8>) -> Result<Vec<u8>, Self::Error> {
        Ok(value.clone())
    }

    fn decode(&self, bytes: &[u8]) -> Result<Vec<u8>, Self::Error> {
        Ok(bytes.to_vec())
    }
}

/// The value as JSON (the `serde` feature): readable with standard tools (`HGET`),
/// language-neutral, and stable across versions of a program that add optional fields.
/// Implement [`Codec`] where compactness matters more.
#[cfg(feature = "serde")]
#[derive(Clone, Copy, Debug, Default)]
pub struct Json;

#[cfg(feature = "serde")]
impl<T: serde::Serialize + serde::de::DeserializeOwned> Codec<T> for Json {
    type Error = serde_json::Error;

    fn encode(&self, value: &T) -> Result<Vec<u8>, Self::Error> {
        serde_json::to_vec(value)
    }

    fn decode(&self, bytes: &[u8]) -> Result<T, Self::Error> {
        serde_json::from_slice(bytes)
    }
}
