//! Reading a TOML table field by field, with every problem kept with its path, so one pass over a
//! file reports them all.

use std::collections::BTreeSet;
use std::time::Duration;

use super::Problem;
use crate::name::ServiceName;

/// The problems found so far, and how many of them are unknown keys or services: those leave every
/// value that was read intact, so the whole-file checks still run and report alongside them.
pub(super) struct Problems(pub(super) Vec<Problem>, pub(super) usize);

impl Problems {
    pub(super) fn push(&mut self, path: &str, message: impl Into<String>) {
        self.0.push(Problem {
            path: path.to_owned(),
            message: message.into(),
        });
    }

    /// A key (or service) nobody reads: reported, but no value was dropped because of it.
    pub(super) fn push_unknown(&mut self, path: &str, message: impl Into<String>) {
        self.push(path, message);
        self.1 += 1;
    }

    /// Whether every value in the file was read, so whole-file checks see the file as written.
    pub(super) fn values_read(&self) -> bool {
        self.0.len() == self.1
    }
}

pub(super) fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

/// A table being read: remembers which keys were used so the rest can be reported as unknown.
pub(super) struct Fields<'a> {
    table: &'a toml::Table,
    path: String,
    used: BTreeSet<&'a str>,
}

impl<'a> Fields<'a> {
    pub(super) fn new(table: &'a toml::Table, path: &str) -> Self {
        Fields {
            table,
            path: path.to_owned(),
            used: BTreeSet::new(),
        }
    }

    pub(super) fn get(&mut self, key: &str) -> Option<(&'a toml::Value, String)> {
        let (k, v) = self.table.get_key_value(key)?;
        self.used.insert(k.as_str());
        Some((v, join(&self.path, key)))
    }

    /// The path of `key` in this table.
    pub(super) fn path_of(&self, key: &str) -> String {
        join(&self.path, key)
    }

    pub(super) fn finish(self, problems: &mut Problems, known: &[&str]) {
        for key in self.table.keys() {
            if !self.used.contains(key.as_str()) {
                problems.push_unknown(
                    &join(&self.path, key),
                    format!("unknown key (expected one of: {})", known.join(", ")),
                );
            }
        }
    }

    pub(super) fn string(&mut self, key: &str, p: &mut Problems) -> Option<(String, String)> {
        let (v, path) = self.get(key)?;
        match v.as_str() {
            Some(s) => Some((s.to_owned(), path)),
            None => {
                p.push(&path, format!("expected a string, found {}", v.type_str()));
                None
            }
        }
    }

    pub(super) fn boolean(&mut self, key: &str, p: &mut Problems) -> Option<bool> {
        let (v, path) = self.get(key)?;
        v.as_bool().or_else(|| {
            p.push(
                &path,
                format!("expected true or false, found {}", v.type_str()),
            );
            None
        })
    }

    pub(super) fn integer(
        &mut self,
        key: &str,
        min: i64,
        max: i64,
        p: &mut Problems,
    ) -> Option<i64> {
        let (v, path) = self.get(key)?;
        match v.as_integer() {
            Some(n) if (min..=max).contains(&n) => Some(n),
            Some(n) => {
                p.push(&path, format!("{n} is out of range ({min} to {max})"));
                None
            }
            None => {
                p.push(
                    &path,
                    format!("expected an integer, found {}", v.type_str()),
                );
                None
            }
        }
    }

    pub(super) fn float(&mut self, key: &str, min: f64, max: f64, p: &mut Problems) -> Option<f64> {
        let (v, path) = self.get(key)?;
        let n = v.as_float().or_else(|| v.as_integer().map(|i| i as f64));
        match n {
            Some(n) if n >= min && n <= max => Some(n),
            Some(n) => {
                p.push(&path, format!("{n} is out of range ({min} to {max})"));
                None
            }
            None => {
                p.push(&path, format!("expected a number, found {}", v.type_str()));
                None
            }
        }
    }

    pub(super) fn duration(&mut self, key: &str, p: &mut Problems) -> Option<Duration> {
        let (s, path) = self.string(key, p)?;
        match humantime::parse_duration(&s) {
            Ok(d) if d > Duration::ZERO || key.starts_with("backoff") => Some(d),
            Ok(_) => {
                p.push(&path, "must be longer than zero");
                None
            }
            Err(_) => {
                p.push(
                    &path,
                    format!("{s:?} is not a duration; write it like \"500ms\", \"10s\" or \"1m\""),
                );
                None
            }
        }
    }

    pub(super) fn choice<T: Copy>(
        &mut self,
        key: &str,
        options: &[(&str, T)],
        p: &mut Problems,
    ) -> Option<T> {
        let (s, path) = self.string(key, p)?;
        match options.iter().find(|(name, _)| *name == s) {
            Some((_, v)) => Some(*v),
            None => {
                let names: Vec<&str> = options.iter().map(|(n, _)| *n).collect();
                p.push(&path, format!("{s:?} is not one of: {}", names.join(", ")));
                None
            }
        }
    }

    pub(super) fn table(
        &mut self,
        key: &str,
        p: &mut Problems,
    ) -> Option<(&'a toml::Table, String)> {
        let (v, path) = self.get(key)?;
        match v.as_table() {
            Some(t) => Some((t, path)),
            None => {
                p.push(&path, format!("expected a table, found {}", v.type_str()));
                None
            }
        }
    }

    pub(super) fn strings(
        &mut self,
        key: &str,
        max_items: usize,
        p: &mut Problems,
    ) -> Option<Vec<String>> {
        let (v, path) = self.get(key)?;
        let Some(items) = v.as_array() else {
            p.push(
                &path,
                format!("expected an array of strings, found {}", v.type_str()),
            );
            return None;
        };
        if items.len() > max_items {
            p.push(&path, format!("{} items; at most {max_items}", items.len()));
            return None;
        }
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item.as_str() {
                Some(s) => out.push(s.to_owned()),
                None => {
                    p.push(
                        &format!("{path}[{i}]"),
                        format!("expected a string, found {}", item.type_str()),
                    );
                    return None;
                }
            }
        }
        Some(out)
    }

    pub(super) fn names(&mut self, key: &str, p: &mut Problems) -> Option<Vec<ServiceName>> {
        let (v, path) = self.get(key)?;
        let Some(items) = v.as_array() else {
            p.push(
                &path,
                format!("expected an array of service names, found {}", v.type_str()),
            );
            return None;
        };
        let mut names = Vec::new();
        for (i, item) in items.iter().enumerate() {
            match item.as_str().map(ServiceName::new) {
                Some(Ok(n)) => names.push(n),
                Some(Err(e)) => p.push(&format!("{path}[{i}]"), e.to_string()),
                None => p.push(
                    &format!("{path}[{i}]"),
                    format!("expected a string, found {}", item.type_str()),
                ),
            }
        }
        Some(names)
    }
}

pub(super) fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}
