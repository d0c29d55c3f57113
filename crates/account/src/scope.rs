//! Token scopes: which services, and which of their operations, a token may use.
//!
//! A scope is written `*` (everything), `SERVICE` (every operation of one service) or
//! `SERVICE:OPERATION`. Only the services and operations below exist; anything else is refused when a
//! token is issued, so a typo never silently grants nothing (or everything).

use std::fmt;

use serde::{Deserialize, Serialize};

/// The services a token can be scoped to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Area {
    /// The caller's own account: read it, manage its tokens.
    Account,
    Crypto,
    Storage,
    Computation,
    Oracle,
    Ai,
}

impl Area {
    pub const ALL: [Area; 6] = [
        Area::Account,
        Area::Crypto,
        Area::Storage,
        Area::Computation,
        Area::Oracle,
        Area::Ai,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Area::Account => "account",
            Area::Crypto => "crypto",
            Area::Storage => "storage",
            Area::Computation => "computation",
            Area::Oracle => "oracle",
            Area::Ai => "ai",
        }
    }

    /// The operations a scope may name, as the HTTP API checks them.
    pub fn operations(self) -> &'static [&'static str] {
        match self {
            Area::Account => &["read", "tokens"],
            Area::Crypto => &[
                "generate", "list", "describe", "sign", "verify", "encrypt", "decrypt", "derive",
                "rotate", "delete",
            ],
            Area::Storage => &["get", "put", "delete", "list", "batch"],
            Area::Computation => &["run", "jobs"],
            Area::Oracle => &["request", "key"],
            Area::Ai => &["models", "predict", "train"],
        }
    }

    fn parse(s: &str) -> Option<Area> {
        Area::ALL.into_iter().find(|a| a.as_str() == s)
    }
}

/// One scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    All,
    Area(Area),
    Operation(Area, &'static str),
}

/// A scope string that names no service or operation.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ScopeError(String);

impl Scope {
    /// Every string [`Scope::parse`] takes: `*`, each service, `SERVICE:*` and each
    /// `SERVICE:OPERATION`.
    pub fn names() -> Vec<String> {
        let mut names = vec!["*".to_owned()];
        for area in Area::ALL {
            names.push(area.as_str().to_owned());
            names.push(format!("{}:*", area.as_str()));
            names.extend(
                area.operations()
                    .iter()
                    .map(|op| format!("{}:{op}", area.as_str())),
            );
        }
        names
    }

    pub fn parse(s: &str) -> Result<Scope, ScopeError> {
        if s == "*" {
            return Ok(Scope::All);
        }
        let (area, op) = match s.split_once(':') {
            Some((area, op)) => (area, Some(op)),
            None => (s, None),
        };
        let services = || {
            Area::ALL
                .iter()
                .map(|a| a.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let Some(area) = Area::parse(area) else {
            return Err(ScopeError(format!(
                "unknown scope {s:?}: a scope is `*`, a service ({}) or SERVICE:OPERATION",
                services()
            )));
        };
        match op {
            None | Some("*") => Ok(Scope::Area(area)),
            Some(op) => match area.operations().iter().find(|o| **o == op) {
                Some(op) => Ok(Scope::Operation(area, op)),
                None => Err(ScopeError(format!(
                    "unknown scope {s:?}: {} has the operations {}",
                    area.as_str(),
                    area.operations().join(", ")
                ))),
            },
        }
    }

    /// Whether this scope lets a token use `operation` of `area`.
    pub fn allows(&self, area: Area, operation: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Area(a) => *a == area,
            Scope::Operation(a, op) => *a == area && *op == operation,
        }
    }

    /// Whether everything `other` allows, this allows too.
    pub fn covers(&self, other: &Scope) -> bool {
        match (self, other) {
            (Scope::All, _) => true,
            (_, Scope::All) => false,
            (Scope::Area(a), Scope::Area(b)) => a == b,
            (Scope::Area(a), Scope::Operation(b, _)) => a == b,
            (Scope::Operation(..), Scope::Area(_)) => false,
            (Scope::Operation(a, x), Scope::Operation(b, y)) => a == b && x == y,
        }
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::All => f.write_str("*"),
            Scope::Area(a) => f.write_str(a.as_str()),
            Scope::Operation(a, op) => write!(f, "{}:{op}", a.as_str()),
        }
    }
}

impl Serialize for Scope {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Scope {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        Scope::parse(&s).map_err(serde::de::Error::custom)
    }
}

/// Whether a token with `scopes` may use `operation` of `area`.
pub fn allows(scopes: &[Scope], area: Area, operation: &str) -> bool {
    scopes.iter().any(|s| s.allows(area, operation))
}

/// Whether every scope in `wanted` is covered by one of `held`: a token can only hand out what it has.
pub fn covers(held: &[Scope], wanted: &[Scope]) -> bool {
    wanted.iter().all(|w| held.iter().any(|h| h.covers(w)))
}

impl utoipa::PartialSchema for Scope {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        utoipa::openapi::ObjectBuilder::new()
            .schema_type(utoipa::openapi::schema::Type::String)
            .description(Some(
                "`*` (everything), `SERVICE` (every operation of account, crypto, storage, \
                 computation, oracle or ai) or `SERVICE:OPERATION`",
            ))
            .examples(["*", "storage", "crypto:sign"])
            .enum_values(Some(Scope::names()))
            .into()
    }
}

impl utoipa::ToSchema for Scope {}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names the OpenAPI document lists are exactly the ones that parse.
    #[test]
    fn every_listed_name_parses_and_round_trips() {
        let names = Scope::names();
        assert!(names.len() > 20, "{names:?}");
        for name in &names {
            let scope = Scope::parse(name).unwrap_or_else(|e| panic!("{name}: {e}"));
            if !name.ends_with(":*") {
                assert_eq!(&scope.to_string(), name);
            }
        }
        assert!(Scope::parse("storage:nope").is_err());
    }

    fn check(s: &str, expected: Result<&str, &str>) {
        match (Scope::parse(s), expected) {
            (Ok(scope), Ok(shown)) => assert_eq!(scope.to_string(), shown, "{s}"),
            (Err(e), Err(fragment)) => assert!(e.0.contains(fragment), "{s}: {e}"),
            (got, want) => panic!("{s}: got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn parsing() {
        check("*", Ok("*"));
        check("crypto", Ok("crypto"));
        check("crypto:*", Ok("crypto"));
        check("crypto:sign", Ok("crypto:sign"));
        check("storage:get", Ok("storage:get"));
        check("computation:run", Ok("computation:run"));
        check("account:tokens", Ok("account:tokens"));
        check("oracle:request", Ok("oracle:request"));
        check("ai:train", Ok("ai:train"));
        check("crypto:fly", Err("crypto has the operations generate"));
        check(
            "cryptos",
            Err("a service (account, crypto, storage, computation, oracle, ai)"),
        );
        check("", Err("unknown scope"));
        check("crypto:", Err("unknown scope"));
        check(":sign", Err("unknown scope"));
    }

    #[test]
    fn allowing_and_covering() {
        let sign = Scope::parse("crypto:sign").expect("valid");
        let crypto = Scope::parse("crypto").expect("valid");
        assert!(sign.allows(Area::Crypto, "sign"));
        assert!(!sign.allows(Area::Crypto, "verify"));
        assert!(!sign.allows(Area::Storage, "sign"));
        assert!(crypto.allows(Area::Crypto, "verify"));
        assert!(Scope::All.allows(Area::Storage, "put"));

        assert!(crypto.covers(&sign));
        assert!(!sign.covers(&crypto));
        assert!(!crypto.covers(&Scope::All));
        assert!(Scope::All.covers(&crypto));
        assert!(covers(
            std::slice::from_ref(&crypto),
            &[sign.clone(), crypto.clone()]
        ));
        assert!(!covers(&[sign], &[crypto]));
        assert!(covers(&[], &[]));
    }

    #[test]
    fn serde_round_trip_and_refusal() {
        let scopes: Vec<Scope> =
            serde_json::from_str(r#"["*", "storage", "crypto:sign"]"#).expect("valid scopes");
        assert_eq!(
            serde_json::to_string(&scopes).expect("serialize"),
            r#"["*","storage","crypto:sign"]"#
        );
        let bad = serde_json::from_str::<Vec<Scope>>(r#"["storage:fly"]"#)
            .expect_err("unknown operation");
        assert!(
            bad.to_string().contains("storage has the operations"),
            "{bad}"
        );
    }
}
