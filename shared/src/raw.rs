//! Serde helper: a raw JSON field that is present (even as `null`) is
//! `Some`; only an absent one is `None`.

use serde::{Deserialize, Deserializer};
use serde_json::value::RawValue;

/// Deserializes a field that is present as `Some` (JSON `null` included).
pub(crate) fn present<'de, D>(d: D) -> Result<Option<Box<RawValue>>, D::Error>
where
    D: Deserializer<'de>,
{
    Box::<RawValue>::deserialize(d).map(Some)
}
