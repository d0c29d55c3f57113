//! Durations on the wire and on disk as human strings (`"250ms"`, `"10s"`).

use std::time::Duration;

pub(crate) fn serialize<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.collect_str(&humantime::format_duration(*d))
}

pub(crate) fn deserialize<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let text = <std::borrow::Cow<'de, str> as serde::Deserialize>::deserialize(d)?;
    humantime::parse_duration(&text).map_err(serde::de::Error::custom)
}
