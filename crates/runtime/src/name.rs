//! Typed service names: the identity of a service everywhere in the runtime.

use std::borrow::Borrow;
use std::fmt;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

/// The name of a service: 1 to 63 characters, lowercase ASCII letters, digits, `-` and `_`, starting
/// with a letter. Built-in services declare theirs as constants with [`ServiceName::from_static`].
#[derive(Clone)]
pub struct ServiceName(Repr);

#[derive(Clone)]
enum Repr {
    Static(&'static str),
    Shared(Arc<str>),
}

/// Why a string is not a valid [`ServiceName`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid service name {name:?}: {reason}")]
pub struct InvalidName {
    /// The string given.
    pub name: String,
    /// What is wrong with it.
    pub reason: &'static str,
}

const fn check(name: &str) -> Result<(), &'static str> {
    let bytes = name.as_bytes();
    if bytes.is_empty() {
        return Err("must not be empty");
    }
    if bytes.len() > 63 {
        return Err("must be at most 63 characters");
    }
    if !bytes[0].is_ascii_lowercase() {
        return Err("must start with a lowercase letter");
    }
    let mut i = 0;
    while i < bytes.len() {
        let b = bytes[i];
        if !(b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_') {
            return Err("may only contain lowercase letters, digits, '-' and '_'");
        }
        i += 1;
    }
    Ok(())
}

impl ServiceName {
    /// A name known at compile time. Panics at compile time (in a `const`) if the name is invalid.
    pub const fn from_static(name: &'static str) -> Self {
        match check(name) {
            Ok(()) => ServiceName(Repr::Static(name)),
            Err(_) => panic!("invalid static service name"),
        }
    }

    /// Parses a name from untrusted input.
    pub fn new(name: &str) -> Result<Self, InvalidName> {
        check(name).map_err(|reason| InvalidName {
            name: name.to_owned(),
            reason,
        })?;
        Ok(ServiceName(Repr::Shared(Arc::from(name))))
    }

    /// The name as a string.
    pub fn as_str(&self) -> &str {
        match &self.0 {
            Repr::Static(s) => s,
            Repr::Shared(s) => s,
        }
    }
}

impl PartialEq for ServiceName {
    fn eq(&self, other: &Self) -> bool {
        self.as_str() == other.as_str()
    }
}
impl Eq for ServiceName {}
impl PartialOrd for ServiceName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for ServiceName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.as_str().cmp(other.as_str())
    }
}
impl Hash for ServiceName {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.as_str().hash(state)
    }
}
impl Borrow<str> for ServiceName {
    fn borrow(&self) -> &str {
        self.as_str()
    }
}
impl fmt::Display for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
impl fmt::Debug for ServiceName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}
impl std::str::FromStr for ServiceName {
    type Err = InvalidName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        ServiceName::new(s)
    }
}
impl serde::Serialize for ServiceName {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}
impl<'de> serde::Deserialize<'de> for ServiceName {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        ServiceName::new(&s).map_err(serde::de::Error::custom)
    }
}

impl utoipa::PartialSchema for ServiceName {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .pattern(Some("^[a-z][a-z0-9_-]{0,62}$"))
            .description(Some(
                "1 to 63 characters: lowercase ASCII letters, digits, `-` and `_`, starting with a letter",
            ))
            .into()
    }
}

impl utoipa::ToSchema for ServiceName {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates() {
        for ok in ["crypto", "a", "svc-1", "x_y"] {
            assert!(ServiceName::new(ok).is_ok(), "{ok}");
        }
        for bad in ["", "Crypto", "1abc", "a b", "-x", &"a".repeat(64)] {
            assert!(ServiceName::new(bad).is_err(), "{bad}");
        }
        assert_eq!(
            ServiceName::from_static("crypto"),
            ServiceName::new("crypto").unwrap_or_else(|e| panic!("{e}"))
        );
    }
}
