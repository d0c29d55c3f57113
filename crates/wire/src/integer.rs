//! Whole numbers as JSON Schema counts them: `589` and `589.0` are the same integer (JSON has one
//! number type; the OpenAPI document's `integer` admits a number with a zero fraction). serde reads
//! only the first into a Rust integer; request fields that take a count or a size read both through
//! these, with `#[serde(deserialize_with = "wire::integer::whole")]` (or `option`, `vec`).

use std::fmt;
use std::marker::PhantomData;

use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, de::Unexpected};

/// An unsigned integer read from any JSON number with no fraction, within `T`'s range.
struct Whole<T>(T);

impl<'de, T: TryFrom<u64>> Deserialize<'de> for Whole<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Whole<T>, D::Error> {
        struct V<T>(PhantomData<T>);
        impl<T: TryFrom<u64>> Visitor<'_> for V<T> {
            type Value = Whole<T>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(
                    f,
                    "a whole number from 0 to {}",
                    std::any::type_name::<T>()
                        .rsplit("::")
                        .next()
                        .map_or("its type's maximum".to_owned(), |t| format!("{t}::MAX"))
                )
            }

            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Whole<T>, E> {
                T::try_from(v)
                    .map(Whole)
                    .map_err(|_| E::invalid_value(Unexpected::Unsigned(v), &self))
            }

            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Whole<T>, E> {
                let u =
                    u64::try_from(v).map_err(|_| E::invalid_value(Unexpected::Signed(v), &self))?;
                self.visit_u64(u)
            }

            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Whole<T>, E> {
                // 2^64 is the first float past u64::MAX.
                if v.fract() == 0.0 && (0.0..18_446_744_073_709_551_616.0).contains(&v) {
                    self.visit_u64(v as u64)
                } else {
                    Err(E::invalid_value(Unexpected::Float(v), &self))
                }
            }
        }
        d.deserialize_any(V(PhantomData))
    }
}

/// A whole number (`589` or `589.0`).
pub fn whole<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<T, D::Error> {
    Whole::deserialize(d).map(|w| w.0)
}

/// A whole number or `null`.
pub fn option<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Option<T>, D::Error> {
    Option::<Whole<T>>::deserialize(d).map(|o| o.map(|w| w.0))
}

/// A list of whole numbers.
pub fn vec<'de, D: Deserializer<'de>, T: TryFrom<u64>>(d: D) -> Result<Vec<T>, D::Error> {
    Vec::<Whole<T>>::deserialize(d).map(|v| v.into_iter().map(|w| w.0).collect())
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    #[derive(Debug, Deserialize, PartialEq)]
    struct Sizes {
        #[serde(deserialize_with = "super::whole")]
        one: usize,
        #[serde(default, deserialize_with = "super::option")]
        maybe: Option<u64>,
        #[serde(default, deserialize_with = "super::vec")]
        many: Vec<u32>,
    }

    fn read(text: &str) -> Result<Sizes, String> {
        serde_json::from_str(text).map_err(|e| e.to_string())
    }

    #[test]
    fn a_zero_fraction_is_the_same_integer_and_anything_else_is_refused() {
        assert_eq!(
            read(r#"{"one": 589.0, "maybe": 7, "many": [1, 2.0, 1e3]}"#),
            Ok(Sizes {
                one: 589,
                maybe: Some(7),
                many: vec![1, 2, 1000]
            })
        );
        assert_eq!(
            read(r#"{"one": 1, "maybe": null}"#),
            Ok(Sizes {
                one: 1,
                maybe: None,
                many: vec![]
            })
        );
        assert_eq!(
            read(r#"{"one": 18446744073709551615}"#).map(|s| s.one as u64),
            Ok(u64::MAX)
        );
        for refused in [
            r#"{"one": 1.5}"#,
            r#"{"one": -1}"#,
            r#"{"one": -1.0}"#,
            r#"{"one": 1.8446744073709552e19}"#,
            r#"{"one": "1"}"#,
            r#"{"one": 1, "many": [4294967296]}"#,
        ] {
            let e = read(refused).expect_err(refused);
            assert!(e.contains("whole number"), "{refused}: {e}");
        }
    }
}
