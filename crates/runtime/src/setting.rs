//! A service's own settings, each declared once as a typed constant.
//!
//! A service writes one `const` per setting, carrying its name in `[services.NAME]`, its type,
//! default, bounds, help and whether it applies live or at start only:
//!
//! ```
//! use std::time::Duration;
//! use runtime::setting::{List, Setting};
//!
//! const MAX_KEYS: Setting<usize> =
//!     Setting::new("max_keys", 100, 1, 10_000, "most keys one listing returns");
//! const TIMEOUT: Setting<Duration> = Setting::new(
//!     "timeout_ms",
//!     Duration::from_secs(5),
//!     Duration::from_millis(100),
//!     Duration::from_secs(60),
//!     "time a source has to answer, in milliseconds",
//! )
//! .at_start();
//! const HOSTS: List = List::new("hosts", &[], 256, "hosts that may be reached").at_start();
//! ```
//!
//! It declares them on its spec (`Spec::setting(&MAX_KEYS)`, `Spec::list(&HOSTS)`) and reads them
//! with the same constants (`spec.get(&MAX_KEYS)` is a `usize`). There are no string lookups left to
//! get wrong: a constant that was never declared reads as its default. The configuration parser checks
//! each value against the bounds and each list item against its grammar, with its path; the
//! supervisor's reconfiguration refuses, for every service alike, a change to a setting that applies
//! at start only.

use std::time::Duration;

use serde::Serialize;

/// A refusal of a new spec or of one setting's value: what is wrong with it, said to the operator
/// with the setting's path, and the whole configuration is rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct Veto {
    message: String,
}

impl Veto {
    /// A refusal saying `message`.
    pub fn new(message: impl Into<String>) -> Veto {
        Veto {
            message: message.into(),
        }
    }
}

impl From<String> for Veto {
    fn from(message: String) -> Veto {
        Veto { message }
    }
}

impl From<&str> for Veto {
    fn from(message: &str) -> Veto {
        Veto::new(message)
    }
}

/// When a new value of a setting takes effect.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Applies {
    /// Running incarnations see it through their spec changes.
    Live,
    /// Read when the service starts; a configuration that changes it is refused (it takes a restart).
    AtStart,
}

/// A type a setting may have. Values are kept as integers in the spec and the configuration (a
/// duration as milliseconds, so its name ends in `_ms`); bounds are checked on that integer.
pub trait Value: Copy {
    /// The value as the integer a configuration writes.
    fn to_raw(self) -> i64;
    /// The value of `raw`, which is within the setting's bounds.
    fn from_raw(raw: i64) -> Self;
}

macro_rules! unsigned {
    ($($t:ty),*) => {$(
        impl Value for $t {
            fn to_raw(self) -> i64 {
                i64::try_from(self).unwrap_or(i64::MAX)
            }
            fn from_raw(raw: i64) -> Self {
                <$t>::try_from(raw.max(0)).unwrap_or(<$t>::MAX)
            }
        }
    )*};
}

unsigned!(u16, u32, u64, usize);

impl Value for i64 {
    fn to_raw(self) -> i64 {
        self
    }
    fn from_raw(raw: i64) -> Self {
        raw
    }
}

impl Value for Duration {
    fn to_raw(self) -> i64 {
        i64::try_from(self.as_millis()).unwrap_or(i64::MAX)
    }
    fn from_raw(raw: i64) -> Self {
        Duration::from_millis(u64::try_from(raw).unwrap_or(0))
    }
}

/// One of a service's own settings: its name, type, default, bounds and help, and when it applies.
#[derive(Debug, Clone, Copy)]
pub struct Setting<T> {
    name: &'static str,
    default: T,
    min: T,
    max: T,
    help: &'static str,
    applies: Applies,
}

impl<T: Value> Setting<T> {
    /// A setting that applies live.
    pub const fn new(name: &'static str, default: T, min: T, max: T, help: &'static str) -> Self {
        Setting {
            name,
            default,
            min,
            max,
            help,
            applies: Applies::Live,
        }
    }

    /// The same setting, read at start only.
    pub const fn at_start(self) -> Self {
        Setting {
            applies: Applies::AtStart,
            ..self
        }
    }

    /// Its name in `[services.NAME]`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its default.
    pub const fn default_value(&self) -> T {
        self.default
    }

    /// When a new value takes effect.
    pub const fn applies(&self) -> Applies {
        self.applies
    }

    /// What the spec keeps of it: the default in force, untyped.
    pub(crate) fn entry(&self) -> Entry {
        let (value, min, max) = (self.default.to_raw(), self.min.to_raw(), self.max.to_raw());
        debug_assert!(
            (min..=max).contains(&value),
            "{}: default out of bounds",
            self.name
        );
        Entry {
            value,
            min,
            max,
            help: self.help.to_owned(),
            start_only: self.applies == Applies::AtStart,
        }
    }
}

/// A setting shows as its name, so a message can say `services.NAME.{SETTING}`.
impl<T> std::fmt::Display for Setting<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A check of one list item: what is wrong with it, if anything.
pub type ItemCheck = fn(&str) -> Result<(), Veto>;

/// One of a service's own settings that is a list of strings: its name, default, how long it may be,
/// the grammar of its items, its help, and when it applies.
#[derive(Debug, Clone, Copy)]
pub struct List {
    name: &'static str,
    default: &'static [&'static str],
    max_items: usize,
    help: &'static str,
    applies: Applies,
    grammar: Grammar,
}

impl List {
    /// A list that applies live and takes any item.
    pub const fn new(
        name: &'static str,
        default: &'static [&'static str],
        max_items: usize,
        help: &'static str,
    ) -> Self {
        List {
            name,
            default,
            max_items,
            help,
            applies: Applies::Live,
            grammar: Grammar(None),
        }
    }

    /// The same list, read at start only.
    pub const fn at_start(self) -> Self {
        List {
            applies: Applies::AtStart,
            ..self
        }
    }

    /// The same list, whose items must pass `check` (checked when a configuration is parsed).
    pub const fn grammar(self, check: ItemCheck) -> Self {
        List {
            grammar: Grammar(Some(check)),
            ..self
        }
    }

    /// Its name in `[services.NAME]`.
    pub const fn name(&self) -> &'static str {
        self.name
    }

    /// Its default.
    pub fn default_value(&self) -> Vec<String> {
        self.default.iter().map(|s| (*s).to_owned()).collect()
    }

    pub(crate) fn entry(&self) -> ListEntry {
        debug_assert!(
            self.default.len() <= self.max_items,
            "{}: default too long",
            self.name
        );
        ListEntry {
            value: self.default_value(),
            max_items: self.max_items,
            help: self.help.to_owned(),
            start_only: self.applies == Applies::AtStart,
            grammar: self.grammar,
        }
    }
}

/// A list shows as its name, as a [`Setting`] does.
impl std::fmt::Display for List {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name)
    }
}

/// A declared setting as the spec keeps it: the value in force and its bounds, untyped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Entry {
    /// The value in force.
    pub value: i64,
    /// The smallest value allowed.
    pub min: i64,
    /// The largest value allowed.
    pub max: i64,
    /// What it means.
    pub help: String,
    /// Read at start only: a configuration that changes it is refused (it takes a restart).
    #[serde(skip)]
    pub start_only: bool,
}

/// A declared list setting as the spec keeps it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ListEntry {
    /// The value in force.
    pub value: Vec<String>,
    /// The most items it may have.
    pub max_items: usize,
    /// What it means.
    pub help: String,
    /// Read at start only: a configuration that changes it is refused (it takes a restart).
    #[serde(skip)]
    pub start_only: bool,
    /// The grammar each item must follow, checked when a configuration is parsed (so `cloister
    /// config validate` reports a bad item with its path, not only a running service).
    #[serde(skip)]
    pub grammar: Grammar,
}

/// The grammar of a list setting's items: a check that says what is wrong with an item.
#[derive(Clone, Copy, Default)]
pub struct Grammar(Option<ItemCheck>);

impl Grammar {
    /// What is wrong with `item`, if anything.
    pub fn check(&self, item: &str) -> Result<(), Veto> {
        self.0.map_or(Ok(()), |check| check(item))
    }
}

impl std::fmt::Debug for Grammar {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Grammar(checked)"
        } else {
            "Grammar(any)"
        })
    }
}

/// Grammars are not compared: a spec's value is what two specs differ in.
impl PartialEq for Grammar {
    fn eq(&self, _: &Grammar) -> bool {
        true
    }
}

impl Eq for Grammar {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_round_trip_through_their_raw_integer() {
        assert_eq!(
            Duration::from_raw(Duration::from_secs(5).to_raw()),
            Duration::from_secs(5)
        );
        assert_eq!(usize::from_raw(usize::MAX.to_raw()), i64::MAX as usize);
        assert_eq!(
            u32::from_raw(-1),
            0,
            "a negative raw value is no wrap-around"
        );
        assert_eq!(u16::from_raw(1 << 20), u16::MAX, "nor is a large one");
    }
}
