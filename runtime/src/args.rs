use std::path::PathBuf;

use crate::LogFormat;

/// Flags every FerroLB daemon takes; each binary flattens this into its own parser.
#[derive(Debug, Clone, clap::Args)]
pub struct CommonArgs {
    /// Kubeconfig file; wins over KUBECONFIG, the in-cluster config and ~/.kube/config.
    #[arg(long, value_name = "PATH")]
    pub kubeconfig: Option<PathBuf>,

    /// Log filter: a level (info, debug) or RUST_LOG-style directives
    /// (`info,kube=debug`). Defaults to RUST_LOG, else `info`.
    #[arg(long, value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log line format.
    #[arg(long, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        common: CommonArgs,
    }

    #[test]
    fn defaults() {
        let cli = Cli::try_parse_from(["d"]).unwrap();
        assert_eq!(cli.common.kubeconfig, None);
        assert_eq!(cli.common.log_level, None);
        assert_eq!(cli.common.log_format, LogFormat::Text);
    }

    #[test]
    fn all_flags() {
        let cli = Cli::try_parse_from([
            "d",
            "--kubeconfig",
            "/lab/kubeconfig",
            "--log-level",
            "info,kube=debug",
            "--log-format",
            "json",
        ])
        .unwrap();
        assert_eq!(cli.common.kubeconfig, Some("/lab/kubeconfig".into()));
        assert_eq!(cli.common.log_level.as_deref(), Some("info,kube=debug"));
        assert_eq!(cli.common.log_format, LogFormat::Json);
    }

    #[test]
    fn unknown_log_format_is_refused() {
        let err = Cli::try_parse_from(["d", "--log-format", "xml"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
