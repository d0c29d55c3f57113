//! The process's log on standard error: text for people, or one JSON object per line for log
//! collectors (`[runtime] log_format`, overridden by `CLOISTER_LOG_FORMAT`); which events by
//! `CLOISTER_LOG` (an `EnvFilter`, `info` by default).

use anyhow::bail;
use runtime::config::LogFormat;

/// The variable that overrides `runtime.log_format`.
pub(crate) const FORMAT_VARIABLE: &str = "CLOISTER_LOG_FORMAT";

/// The format to log in: `CLOISTER_LOG_FORMAT` when it is set, else the configuration's. An
/// unknown name is refused, not ignored.
pub(crate) fn format(configured: LogFormat, variable: Option<&str>) -> anyhow::Result<LogFormat> {
    match variable {
        None => Ok(configured),
        Some(name) => match LogFormat::named(name.trim()) {
            Some(format) => Ok(format),
            None => {
                let names: Vec<&str> = LogFormat::ALL.iter().map(|(n, _)| *n).collect();
                bail!(
                    "{FORMAT_VARIABLE}={name:?} is not one of: {}",
                    names.join(", ")
                )
            }
        },
    }
}

/// Whether the log is coloured: only on a terminal, and not when `NO_COLOR` is set to anything
/// but the empty string (<https://no-color.org>).
fn colour(terminal: bool, no_color: Option<std::ffi::OsString>) -> bool {
    terminal && no_color.is_none_or(|v| v.is_empty())
}

/// Installs the process's subscriber.
pub(crate) fn init(format: LogFormat) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("CLOISTER_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Text => builder
            .with_ansi(colour(
                std::io::IsTerminal::is_terminal(&std::io::stderr()),
                std::env::var_os("NO_COLOR"),
            ))
            .init(),
        // Every span the event is in, with its fields (the request's `request_id` among them).
        LogFormat::Json => builder
            .json()
            .with_current_span(true)
            .with_span_list(true)
            .init(),
    }
}

#[cfg(test)]
mod tests {
    use runtime::config::LogFormat;

    use super::{colour, format};

    #[test]
    fn the_log_is_coloured_only_on_a_terminal_without_no_color() {
        assert!(colour(true, None));
        assert!(colour(true, Some("".into())), "an empty NO_COLOR is unset");
        assert!(!colour(true, Some("1".into())));
        assert!(!colour(false, None));
    }

    #[test]
    fn the_variable_overrides_the_configuration_and_an_unknown_format_is_refused() {
        assert_eq!(
            format(LogFormat::Text, None).expect("a format"),
            LogFormat::Text
        );
        assert_eq!(
            format(LogFormat::Text, Some("json")).expect("a format"),
            LogFormat::Json
        );
        assert_eq!(
            format(LogFormat::Json, Some("text")).expect("a format"),
            LogFormat::Text
        );
        let refused = format(LogFormat::Text, Some("xml"))
            .expect_err("refused")
            .to_string();
        assert!(
            refused.contains("CLOISTER_LOG_FORMAT") && refused.contains("json"),
            "{refused}"
        );
    }
}
