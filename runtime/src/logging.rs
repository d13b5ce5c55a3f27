use std::io::IsTerminal;

use tracing_subscriber::{EnvFilter, fmt, prelude::*};

use crate::Error;

/// How log lines are written: `text` for people, `json` for log pipelines.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum LogFormat {
    /// Human-readable single lines with key=value fields.
    #[default]
    Text,
    /// One JSON object per line, fields flattened into the top level.
    Json,
}

/// The filter text in force: the flag if given, else RUST_LOG if set and non-empty, else `info`.
pub fn filter_directives(flag: Option<&str>, rust_log: Option<&str>) -> String {
    flag.or(rust_log.filter(|s| !s.trim().is_empty()))
        .unwrap_or("info")
        .to_owned()
}

/// Parses RUST_LOG-style directives, refusing what tracing-subscriber would silently drop.
pub fn parse_filter(directives: &str) -> Result<EnvFilter, Error> {
    EnvFilter::builder()
        .parse(directives)
        .map_err(|source| Error::LogFilter {
            filter: directives.to_owned(),
            source,
        })
}

/// Installs the global tracing subscriber; logs go to stderr so stdout stays free.
pub fn init_logging(level: Option<&str>, format: LogFormat) -> Result<(), Error> {
    let rust_log = std::env::var("RUST_LOG").ok();
    let filter = parse_filter(&filter_directives(level, rust_log.as_deref()))?;
    // Colour codes only help a person at a terminal; in pod logs they are noise.
    let ansi = std::io::stderr().is_terminal();
    let registry = tracing_subscriber::registry().with(filter);
    let result = match format {
        LogFormat::Text => registry
            .with(fmt::layer().with_ansi(ansi).with_writer(std::io::stderr))
            .try_init(),
        LogFormat::Json => registry
            .with(
                fmt::layer()
                    .json()
                    .flatten_event(true)
                    .with_current_span(false)
                    .with_ansi(false)
                    .with_writer(std::io::stderr),
            )
            .try_init(),
    };
    result.map_err(|_| Error::LoggingInit)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_rust_log_beats_default() {
        assert_eq!(filter_directives(Some("debug"), Some("warn")), "debug");
        assert_eq!(
            filter_directives(None, Some("warn,kube=debug")),
            "warn,kube=debug"
        );
        assert_eq!(filter_directives(None, Some("  ")), "info");
        assert_eq!(filter_directives(None, None), "info");
    }

    #[test]
    fn filters_parse() {
        for ok in [
            "info",
            "debug",
            "info,kube=debug",
            "ferrolb_controller=trace,warn",
        ] {
            assert!(parse_filter(ok).is_ok(), "{ok} should parse");
        }
    }

    #[test]
    fn bad_filter_is_an_error() {
        let err = parse_filter("info,kube=loud").unwrap_err();
        assert_eq!(err.metric_label(), "log_filter");
        assert!(err.to_string().contains("kube=loud"), "{err}");
    }

    #[test]
    fn log_format_values() {
        use clap::ValueEnum;
        assert_eq!(LogFormat::from_str("json", true), Ok(LogFormat::Json));
        assert_eq!(LogFormat::from_str("text", true), Ok(LogFormat::Text));
        assert!(LogFormat::from_str("xml", true).is_err());
    }
}
